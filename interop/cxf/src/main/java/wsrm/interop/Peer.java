package wsrm.interop;

import jakarta.jws.Oneway;
import jakarta.jws.WebMethod;
import jakarta.jws.WebParam;
import jakarta.jws.WebResult;
import jakarta.jws.WebService;
import jakarta.jws.soap.SOAPBinding;
import jakarta.xml.ws.Action;
import jakarta.xml.ws.BindingProvider;

import java.io.FileOutputStream;
import java.io.IOException;
import java.io.OutputStreamWriter;
import java.io.PrintStream;
import java.io.Writer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.CountDownLatch;

import org.apache.cxf.Bus;
import org.apache.cxf.BusFactory;
import org.apache.cxf.endpoint.Client;
import org.apache.cxf.endpoint.Server;
import org.apache.cxf.ext.logging.LoggingFeature;
import org.apache.cxf.ext.logging.event.LogEvent;
import org.apache.cxf.feature.Feature;
import org.apache.cxf.frontend.ClientProxy;
import org.apache.cxf.interceptor.Fault;
import org.apache.cxf.jaxws.JaxWsProxyFactoryBean;
import org.apache.cxf.jaxws.JaxWsServerFactoryBean;
import org.apache.cxf.message.Message;
import org.apache.cxf.phase.AbstractPhaseInterceptor;
import org.apache.cxf.phase.Phase;
import org.apache.cxf.phase.PhaseInterceptorChain;
import org.apache.cxf.transport.http.HTTPConduit;
import org.apache.cxf.transports.http.configuration.HTTPClientPolicy;
import org.apache.cxf.ws.addressing.AddressingProperties;
import org.apache.cxf.ws.addressing.WSAddressingFeature;
import org.apache.cxf.ws.rm.RM10Constants;
import org.apache.cxf.ws.rm.RM11Constants;
import org.apache.cxf.ws.rm.RMContextUtils;
import org.apache.cxf.ws.rm.RMManager;
import org.apache.cxf.ws.rm.RMProperties;
import org.apache.cxf.ws.rm.feature.RMFeature;
import org.apache.cxf.ws.rm.manager.AcksPolicyType;
import org.apache.cxf.ws.rm.manager.DeliveryAssuranceType;
import org.apache.cxf.ws.rm.manager.DestinationPolicyType;
import org.apache.cxf.ws.rm.manager.RM10AddressingNamespaceType;
import org.apache.cxf.ws.rm.manager.SequenceTerminationPolicyType;
import org.apache.cxf.ws.rm.manager.SourcePolicyType;
import org.apache.cxf.ws.rm.v200702.SequenceType;
import org.apache.cxf.ws.rmp.v200502.RMAssertion;

/**
 * Apache CXF WS-ReliableMessaging interop peer for wsrm (a test tool, never distributed).
 *
 * <p>Configured like WCF's bindings: SOAP 1.2, WS-Addressing 2005/08 (set explicitly also for
 * RM 1.0, where CXF's default would be 2004/08), anonymous AcksTo/ReplyTo, an Offer for
 * request-reply, exactly-once in-order delivery at the destination.
 *
 * <pre>
 * service --port N [--host H] --rm 1.0|1.1 [--out FILE] [--state FILE] [--log FILE]
 * client  --url URL --rm 1.0|1.1 [--count N | --lines FILE] [--oneway | --request-reply]
 *         [--out FILE] [--log FILE] [--timeout SEC]
 * client  --url URL --rm 1.0|1.1 --bench [--count N] [--warmup N] [--size BYTES] [--sessions K]
 *         [--timeout SEC]                   (one-way throughput/latency, see Bench; used by bench/run)
 * </pre>
 *
 * Contract (shared with the gSOAP peer and wsrm): body {@code <p xmlns="urn:wsrm:payload">TEXT</p>},
 * one-way action {@code urn:wsrm:payload/Ping}, request-reply action {@code urn:wsrm:payload/Echo}
 * with reply action {@code urn:wsrm:payload/EchoResponse} and the same body element.
 */
public final class Peer {
    static final String PAYLOAD_NS = "urn:wsrm:payload";
    static final String ACTION_PING = "urn:wsrm:payload/Ping";
    static final String ACTION_ECHO = "urn:wsrm:payload/Echo";
    static final String ACTION_ECHO_RESPONSE = "urn:wsrm:payload/EchoResponse";
    static final String WSA_2005 = "http://www.w3.org/2005/08/addressing";

    /** The service contract: document/literal bare, one body element for every message. */
    @WebService(name = "Peer", targetNamespace = "urn:wsrm:interop")
    @SOAPBinding(parameterStyle = SOAPBinding.ParameterStyle.BARE)
    public interface PeerPort {
        @Oneway
        @WebMethod(operationName = "Ping", action = ACTION_PING)
        @Action(input = ACTION_PING)
        void ping(@WebParam(name = "p", targetNamespace = PAYLOAD_NS, partName = "ping") String text);

        @WebMethod(operationName = "Echo", action = ACTION_ECHO)
        @Action(input = ACTION_ECHO, output = ACTION_ECHO_RESPONSE)
        @WebResult(name = "p", targetNamespace = PAYLOAD_NS, partName = "reply")
        String echo(@WebParam(name = "p", targetNamespace = PAYLOAD_NS, partName = "request") String text);
    }

    /** Delivered-message recorder: one JSON line per message, in delivery order. */
    static final class Recorder {
        private final Writer out;

        Recorder(String path) throws IOException {
            out = path == null ? null
                    : new OutputStreamWriter(new FileOutputStream(path, true), StandardCharsets.UTF_8);
        }

        synchronized void record(String sequence, long number, String action, String text) {
            if (out == null) {
                return;
            }
            try {
                out.write("{\"sequence\":" + json(sequence) + ",\"number\":" + number + ",\"action\":"
                        + json(action) + ",\"text\":" + json(text) + "}\n");
                out.flush();
            } catch (IOException e) {
                throw new IllegalStateException(e);
            }
        }
    }

    static String json(String s) {
        if (s == null) {
            s = "";
        }
        StringBuilder b = new StringBuilder("\"");
        for (char c : s.toCharArray()) {
            switch (c) {
                case '"': b.append("\\\""); break;
                case '\\': b.append("\\\\"); break;
                case '\n': b.append("\\n"); break;
                case '\r': b.append("\\r"); break;
                case '\t': b.append("\\t"); break;
                default:
                    if (c < 0x20) {
                        b.append(String.format("\\u%04x", (int) c));
                    } else {
                        b.append(c);
                    }
            }
        }
        return b.append('"').toString();
    }

    /** Sequence id and message number of the message being processed (inbound). */
    static String[] currentSequence() {
        Message m = PhaseInterceptorChain.getCurrentMessage();
        if (m == null) {
            return new String[] {"", "0"};
        }
        RMProperties rmps = RMContextUtils.retrieveRMProperties(m, false);
        SequenceType st = rmps == null ? null : rmps.getSequence();
        if (st == null) {
            return new String[] {"", "0"};
        }
        return new String[] {st.getIdentifier().getValue(), Long.toString(st.getMessageNumber())};
    }

    /** The service implementation. */
    @WebService(serviceName = "PeerService", portName = "PeerPort", targetNamespace = "urn:wsrm:interop",
            endpointInterface = "wsrm.interop.Peer$PeerPort")
    public static final class PeerImpl implements PeerPort {
        private final Recorder recorder;
        volatile long delivered;

        PeerImpl(Recorder recorder) {
            this.recorder = recorder;
        }

        @Override
        public void ping(String text) {
            String[] seq = currentSequence();
            recorder.record(seq[0], Long.parseLong(seq[1]), ACTION_PING, text);
            delivered++;
        }

        @Override
        public String echo(String text) {
            String[] seq = currentSequence();
            recorder.record(seq[0], Long.parseLong(seq[1]), ACTION_ECHO, text);
            delivered++;
            return text;
        }
    }

    /** Counts the wsa:Action of every message seen (application and RM protocol messages). */
    static final class ActionCounter extends AbstractPhaseInterceptor<Message> {
        final Map<String, Integer> counts = new TreeMap<>();

        ActionCounter() {
            super(Phase.USER_PROTOCOL);
        }

        @Override
        public void handleMessage(Message message) throws Fault {
            AddressingProperties maps = RMContextUtils.retrieveMAPs(message, false, false);
            if (maps != null && maps.getAction() != null) {
                synchronized (counts) {
                    counts.merge(maps.getAction().getValue(), 1, Integer::sum);
                }
            }
        }
    }

    /** Raw message log: every message in and out, with its HTTP status where known. */
    static LoggingFeature logging(String path) throws IOException {
        if (path == null) {
            return null;
        }
        PrintStream log = new PrintStream(new FileOutputStream(path, true), true, StandardCharsets.UTF_8);
        LoggingFeature lf = new LoggingFeature();
        lf.setLimit(16 * 1024 * 1024);
        lf.setPrettyLogging(false);
        lf.setLogBinary(false);
        lf.setSender((LogEvent ev) -> {
            synchronized (log) {
                log.println("=== " + ev.getType() + " " + (ev.getResponseCode() == null ? "" : ev.getResponseCode())
                        + " " + (ev.getAddress() == null ? "" : ev.getAddress()) + " content-type="
                        + ev.getContentType());
                log.println(ev.getPayload() == null ? "" : ev.getPayload());
            }
        });
        return lf;
    }

    static RMFeature rmFeature(String rm, boolean offer) {
        RMAssertion rma = new RMAssertion();
        RMAssertion.BaseRetransmissionInterval bri = new RMAssertion.BaseRetransmissionInterval();
        bri.setMilliseconds(1000L);
        rma.setBaseRetransmissionInterval(bri);
        // No AcknowledgementInterval: acknowledge at once, piggy-backed on the reply (as WCF does
        // on the HTTP back-channel); a deferred interval makes CXF send acks as separate messages.

        AcksPolicyType acks = new AcksPolicyType();
        acks.setIntraMessageThreshold(0);
        DestinationPolicyType dp = new DestinationPolicyType();
        dp.setAcksPolicy(acks);

        SourcePolicyType sp = new SourcePolicyType();
        sp.setIncludeOffer(offer);
        // CXF's default Expires is PT0S, which the specs define as "never expires"; gSOAP reads it
        // as "already expired" and faults every later message with SequenceTerminated. WCF sends
        // no Expires at all; CXF cannot omit it, so send a long finite lifetime instead.
        try {
            javax.xml.datatype.Duration oneHour = javax.xml.datatype.DatatypeFactory.newInstance().newDuration("PT1H");
            sp.setSequenceExpiration(oneHour);
            sp.setOfferedSequenceExpiration(oneHour);
        } catch (javax.xml.datatype.DatatypeConfigurationException e) {
            throw new IllegalStateException(e);
        }
        SequenceTerminationPolicyType stp = new SequenceTerminationPolicyType();
        stp.setTerminateOnShutdown(true);
        sp.setSequenceTerminationPolicy(stp);

        // WCF's reliable sessions are exactly-once and (by default) ordered.
        DeliveryAssuranceType da = new DeliveryAssuranceType();
        da.setExactlyOnce(new DeliveryAssuranceType.ExactlyOnce());
        da.setInOrder(new DeliveryAssuranceType.InOrder());

        RMFeature f = new RMFeature();
        f.setRMAssertion(rma);
        f.setDestinationPolicy(dp);
        f.setSourcePolicy(sp);
        f.setDeliveryAssurance(da);
        if ("1.0".equals(rm)) {
            f.setRMNamespace(RM10Constants.NAMESPACE_URI);
            RM10AddressingNamespaceType wsa = new RM10AddressingNamespaceType();
            wsa.setUri(WSA_2005); // WCF: RM 1.0 with WS-Addressing 1.0 (CXF's default is 2004/08)
            f.setRM10AddressingNamespace(wsa);
        } else if ("1.1".equals(rm)) {
            f.setRMNamespace(RM11Constants.NAMESPACE_URI);
        } else {
            throw new IllegalArgumentException("--rm must be 1.0 or 1.1");
        }
        return f;
    }

    // ------------------------------------------------------------------ service

    static int service(Map<String, String> o) throws Exception {
        String host = o.getOrDefault("host", "127.0.0.1");
        int port = Integer.parseInt(req(o, "port"));
        String rm = o.getOrDefault("rm", "1.1");
        Bus bus = BusFactory.newInstance().createBus(); // one Bus per role: RMFeature config is Bus-wide
        PeerImpl impl = new PeerImpl(new Recorder(o.get("out")));
        ActionCounter counter = new ActionCounter();
        JaxWsServerFactoryBean sf = new JaxWsServerFactoryBean();
        sf.setBus(bus);
        sf.setServiceClass(PeerPort.class);
        sf.setServiceBean(impl);
        sf.setAddress("http://" + host + ":" + port + "/");
        sf.setBindingId(jakarta.xml.ws.soap.SOAPBinding.SOAP12HTTP_BINDING);
        List<Feature> features = new ArrayList<>();
        features.add(new WSAddressingFeature());
        // As a destination CXF answers in whichever RM/WS-A version the client used; the
        // configured namespace matters only for the offered sequence it sends replies on.
        features.add(rmFeature(rm, false));
        LoggingFeature lf = logging(o.get("log"));
        if (lf != null) {
            lf.initialize(bus); // Bus-wide, so RM protocol messages are logged as well
        }
        sf.getFeatures().addAll(features);
        sf.getInInterceptors().add(counter);
        Server server = sf.create();
        System.err.println("cxf-peer: RM " + rm + " service listening on http://" + host + ":" + port + "/");

        CountDownLatch stop = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                writeState(o.get("state"), impl, counter);
                server.stop();
            } catch (Exception e) {
                e.printStackTrace();
            } finally {
                stop.countDown();
            }
        }));
        stop.await();
        return 0;
    }

    static void writeState(String path, PeerImpl impl, ActionCounter counter) throws IOException {
        StringBuilder b = new StringBuilder("{\"delivered\":" + impl.delivered + ",\"actions\":{");
        synchronized (counter.counts) {
            boolean first = true;
            for (Map.Entry<String, Integer> e : counter.counts.entrySet()) {
                b.append(first ? "" : ",").append(json(e.getKey())).append(':').append(e.getValue());
                first = false;
            }
        }
        b.append("}}\n");
        if (path != null) {
            Files.writeString(Path.of(path), b.toString());
        } else {
            System.err.print(b);
        }
    }

    // ------------------------------------------------------------------ client

    static int client(Map<String, String> o) throws Exception {
        String url = req(o, "url");
        String rm = o.getOrDefault("rm", "1.1");
        boolean rr = o.containsKey("request-reply");
        int timeoutMs = Integer.parseInt(o.getOrDefault("timeout", "10")) * 1000;
        List<String> msgs = new ArrayList<>();
        if (o.containsKey("lines")) {
            msgs.addAll(Files.readAllLines(Path.of(o.get("lines")), StandardCharsets.UTF_8));
        } else {
            int n = Integer.parseInt(o.getOrDefault("count", "10"));
            for (int i = 1; i <= n; i++) {
                msgs.add("message-" + i);
            }
        }
        Recorder replies = new Recorder(o.get("out"));
        Bus bus = BusFactory.newInstance().createBus();
        JaxWsProxyFactoryBean pf = new JaxWsProxyFactoryBean();
        pf.setBus(bus);
        pf.setServiceClass(PeerPort.class);
        pf.setAddress(url);
        pf.setBindingId(jakarta.xml.ws.soap.SOAPBinding.SOAP12HTTP_BINDING);
        pf.getFeatures().add(new WSAddressingFeature());
        pf.getFeatures().add(rmFeature(rm, rr)); // WCF offers a sequence only for request-reply
        LoggingFeature lf = logging(o.get("log"));
        if (lf != null) {
            lf.initialize(bus); // Bus-wide: also the RM protocol client (CreateSequence, Terminate...)
        }
        PeerPort port = (PeerPort) pf.create();
        Client client = ClientProxy.getClient(port);
        HTTPConduit conduit = (HTTPConduit) client.getConduit();
        HTTPClientPolicy policy = new HTTPClientPolicy();
        policy.setConnectionTimeout(timeoutMs);
        policy.setReceiveTimeout(timeoutMs);
        conduit.setClient(policy);
        RMManager manager = bus.getExtension(RMManager.class);

        long t0 = System.nanoTime();
        int got = 0;
        int bad = 0;
        int failed = 0;
        int retries = 0;
        Map<String, Object> ctx = ((BindingProvider) port).getRequestContext();
        for (int i = 0; i < msgs.size(); i++) {
            String text = msgs.get(i);
            if (i == msgs.size() - 1) {
                // Mark the last message: RM 1.0 LastMessage in its Sequence header; RM 1.1 a
                // CloseSequence follows once it is sent.
                ctx.put(RMManager.WSRM_LAST_MESSAGE_PROPERTY, Boolean.TRUE);
            }
            for (int attempt = 1;; attempt++) {
                try {
                    if (rr) {
                        String reply = port.echo(text);
                        got++;
                        if (!text.equals(reply)) {
                            bad++;
                        }
                        String[] seq = lastInboundSequence(client);
                        replies.record(seq[0], Long.parseLong(seq[1]), ACTION_ECHO_RESPONSE, reply);
                    } else {
                        port.ping(text);
                    }
                    break;
                } catch (RuntimeException e) {
                    // CXF sends CreateSequence once; when it is lost the call fails before the
                    // message got a sequence number, so calling again cannot duplicate it, and
                    // an application would (WCF's client resends CreateSequence itself).
                    if (attempt < 10 && rmProtocolFailure(e, "CreateSequence")) {
                        retries++;
                        System.err.println("cxf-peer: message " + (i + 1) + " attempt " + attempt
                                + ": CreateSequence lost, calling again: " + e);
                        Thread.sleep(100);
                        continue;
                    }
                    failed++;
                    System.err.println("cxf-peer: message " + (i + 1) + " failed: " + e);
                    break;
                }
            }
        }
        ctx.remove(RMManager.WSRM_LAST_MESSAGE_PROPERTY);
        // Wait (bounded) until every message is acknowledged.
        long deadline = System.currentTimeMillis() + Math.max(timeoutMs * 3L, 30000L);
        while (manager.getRetransmissionQueue().countUnacknowledged() > 0
                && System.currentTimeMillis() < deadline) {
            Thread.sleep(50);
        }
        int unacked = manager.getRetransmissionQueue().countUnacknowledged();
        // Closing the client ends the reliable endpoint: terminateOnShutdown sends TerminateSequence.
        client.destroy();
        bus.shutdown(true);
        double elapsed = (System.nanoTime() - t0) / 1e9;
        boolean ok = unacked == 0 && failed == 0 && (!rr || (got == msgs.size() && bad == 0));
        System.out.println("SUMMARY {\"ok\":" + ok + ",\"rm\":" + json(rm) + ",\"mode\":"
                + json(rr ? "request-reply" : "one-way") + ",\"sent\":" + msgs.size() + ",\"unacknowledged\":"
                + unacked + ",\"failed\":" + failed + ",\"retries\":" + retries + ",\"replies\":" + got + ",\"bad_replies\":" + bad
                + ",\"elapsed\":" + String.format("%.3f", elapsed) + "}");
        return ok ? 0 : 1;
    }

    /**
     * True when `e` (or a cause) is CXF's failure to send the RM protocol message `what`
     * ("Failed to send RM protocol message {ns}CreateSequence."), as when an intermediary
     * dropped it.
     */
    static boolean rmProtocolFailure(Throwable e, String what) {
        for (Throwable t = e; t != null; t = t.getCause()) {
            String m = t.getMessage();
            if (m != null && m.contains("Failed to send RM protocol message") && m.contains("}" + what)) {
                return true;
            }
            if (t.getCause() == t) {
                break;
            }
        }
        return false;
    }

    /** Sequence id / number of the last reply, read from the client's response context. */
    static String[] lastInboundSequence(Client client) {
        Map<String, Object> rc = client.getResponseContext();
        Object o = rc == null ? null : rc.get(RMContextUtils.getRMPropertiesKey(false));
        if (o instanceof RMProperties) {
            SequenceType st = ((RMProperties) o).getSequence();
            if (st != null) {
                return new String[] {st.getIdentifier().getValue(), Long.toString(st.getMessageNumber())};
            }
        }
        return new String[] {"", "0"};
    }

    // ------------------------------------------------------------------ main

    static String req(Map<String, String> o, String k) {
        String v = o.get(k);
        if (v == null) {
            throw new IllegalArgumentException("missing --" + k);
        }
        return v;
    }

    static void usage() {
        System.err.println("usage: cxf-peer service --port N --rm 1.0|1.1 [--host H] [--out FILE] [--state FILE] [--log FILE]\n"
                + "       cxf-peer client --url URL --rm 1.0|1.1 [--count N | --lines FILE] [--oneway|--request-reply]\n"
                + "                       [--out FILE] [--log FILE] [--timeout SEC]\n"
                + "       cxf-peer client --url URL --rm 1.0|1.1 --bench [--count N] [--warmup N] [--size BYTES]\n"
                + "                       [--sessions K] [--timeout SEC]");
    }

    public static void main(String[] args) throws Exception {
        if (args.length < 1) {
            usage();
            System.exit(2);
        }
        Map<String, String> o = new TreeMap<>();
        for (int i = 1; i < args.length; i++) {
            String a = args[i];
            if (!a.startsWith("--")) {
                usage();
                System.exit(2);
            }
            String k = a.substring(2);
            if (k.equals("bench")) {
                o.put(k, "");
            } else if (k.equals("oneway") || k.equals("request-reply")) {
                if (k.equals("oneway")) {
                    o.remove("request-reply");
                } else {
                    o.put(k, "");
                }
            } else if (i + 1 < args.length) {
                o.put(k, args[++i]);
            } else {
                usage();
                System.exit(2);
            }
        }
        int rc;
        try {
            switch (args[0]) {
                case "service":
                case "server":
                    rc = service(o);
                    break;
                case "client":
                    rc = o.containsKey("bench") ? Bench.run(o) : client(o);
                    break;
                default:
                    usage();
                    rc = 2;
            }
        } catch (IllegalArgumentException e) {
            System.err.println("cxf-peer: " + e.getMessage());
            usage();
            rc = 2;
        }
        System.exit(rc);
    }
}
