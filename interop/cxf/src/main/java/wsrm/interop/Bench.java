package wsrm.interop;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CyclicBarrier;

import org.apache.cxf.Bus;
import org.apache.cxf.BusFactory;
import org.apache.cxf.endpoint.Client;
import org.apache.cxf.frontend.ClientProxy;
import org.apache.cxf.interceptor.Fault;
import org.apache.cxf.jaxws.JaxWsProxyFactoryBean;
import org.apache.cxf.message.Message;
import org.apache.cxf.phase.AbstractPhaseInterceptor;
import org.apache.cxf.phase.Phase;
import org.apache.cxf.transport.http.HTTPConduit;
import org.apache.cxf.transports.http.configuration.HTTPClientPolicy;
import org.apache.cxf.ws.addressing.WSAddressingFeature;
import org.apache.cxf.ws.rm.RMContextUtils;
import org.apache.cxf.ws.rm.RMInInterceptor;
import org.apache.cxf.ws.rm.RMManager;
import org.apache.cxf.ws.rm.RMProperties;
import org.apache.cxf.ws.rm.v200702.SequenceAcknowledgement;
import org.apache.cxf.ws.rm.v200702.SequenceType;

/**
 * {@code client --bench}: K concurrent reliable sessions, each with its own CXF Bus (CXF keeps
 * one current sequence per Bus and endpoint, so separate Buses give separate sequences), send
 * {@code --warmup} untimed then {@code --count} timed one-way messages of {@code --size} bytes of
 * text. Send-to-ack latency of message n = from the first time it passes the client's outbound
 * chain (after RM numbered it) until an inbound SequenceAcknowledgement first covers it, so
 * retransmissions by CXF's RetransmissionQueue are included. The timed window ends when every
 * timed message of every session is acknowledged. Prints "BENCH-START" when the window opens and
 * "BENCH {json}" last (used by bench/run).
 */
final class Bench {
    private Bench() {
    }

    /** Records the first send time of each message number (outbound, after RM numbered it). */
    static final class SendTimes extends AbstractPhaseInterceptor<Message> {
        final Map<Long, Long> sent;

        SendTimes(Map<Long, Long> sent) {
            super(Phase.PRE_PROTOCOL);
            this.sent = sent;
        }

        @Override
        public void handleMessage(Message message) throws Fault {
            RMProperties p = RMContextUtils.retrieveRMProperties(message, true);
            SequenceType st = p == null ? null : p.getSequence();
            if (st != null) {
                sent.putIfAbsent(st.getMessageNumber(), System.nanoTime());
            }
        }
    }

    /** Records the first time an inbound acknowledgement covers each message number. */
    static final class AckTimes extends AbstractPhaseInterceptor<Message> {
        final Map<Long, Long> acked;

        AckTimes(Map<Long, Long> acked) {
            super(Phase.PRE_LOGICAL);
            addBefore(RMInInterceptor.class.getName());
            this.acked = acked;
        }

        @Override
        public void handleMessage(Message message) throws Fault {
            RMProperties p = RMContextUtils.retrieveRMProperties(message, false);
            if (p == null || p.getAcks() == null) {
                return;
            }
            long now = System.nanoTime();
            for (SequenceAcknowledgement sa : p.getAcks()) {
                for (SequenceAcknowledgement.AcknowledgementRange r : sa.getAcknowledgementRange()) {
                    long lo = r.getLower() == null ? 1 : r.getLower();
                    long hi = r.getUpper() == null ? lo : r.getUpper();
                    for (long n = lo; n <= hi && n - lo < 10_000_000L; n++) {
                        acked.putIfAbsent(n, now);
                    }
                }
            }
        }
    }

    static final class Session implements Runnable {
        final int index;
        final String url;
        final String rm;
        final int warmup;
        final int count;
        final int size;
        final int timeoutMs;
        final CyclicBarrier ready;
        final CyclicBarrier go;
        final Map<Long, Long> sent = new ConcurrentHashMap<>();
        final Map<Long, Long> acked = new ConcurrentHashMap<>();
        long firstTimed = Long.MAX_VALUE; // first timed message number
        long lastTimed = 0;
        long end;
        int failed;
        boolean ok;
        String error = "";

        Session(int index, String url, String rm, int warmup, int count, int size, int timeoutMs,
                CyclicBarrier ready, CyclicBarrier go) {
            this.index = index;
            this.url = url;
            this.rm = rm;
            this.warmup = warmup;
            this.count = count;
            this.size = size;
            this.timeoutMs = timeoutMs;
            this.ready = ready;
            this.go = go;
        }

        String text(int i) {
            StringBuilder b = new StringBuilder(size);
            b.append("message-").append(i).append('-');
            while (b.length() < size) {
                b.append('x');
            }
            return b.toString();
        }

        @Override
        public void run() {
            Bus bus = null;
            Client client = null;
            boolean waited = false;
            try {
                bus = BusFactory.newInstance().createBus();
                bus.getOutInterceptors().add(new SendTimes(sent));
                bus.getInInterceptors().add(new AckTimes(acked));
                JaxWsProxyFactoryBean pf = new JaxWsProxyFactoryBean();
                pf.setBus(bus);
                pf.setServiceClass(Peer.PeerPort.class);
                pf.setAddress(url);
                pf.setBindingId(jakarta.xml.ws.soap.SOAPBinding.SOAP12HTTP_BINDING);
                pf.getFeatures().add(new WSAddressingFeature());
                pf.getFeatures().add(Peer.rmFeature(rm, false));
                Peer.PeerPort port = (Peer.PeerPort) pf.create();
                client = ClientProxy.getClient(port);
                HTTPConduit conduit = (HTTPConduit) client.getConduit();
                HTTPClientPolicy policy = new HTTPClientPolicy();
                policy.setConnectionTimeout(timeoutMs);
                policy.setReceiveTimeout(timeoutMs);
                conduit.setClient(policy);
                RMManager manager = bus.getExtension(RMManager.class);
                int i = 1;
                for (; i <= warmup; i++) {
                    send(port, i);
                }
                waitAcked(manager);
                waited = true;
                ready.await();
                go.await();
                for (int k = 0; k < count; k++, i++) {
                    send(port, i);
                    if (k == 0) {
                        firstTimed = maxKey(sent);
                    }
                }
                lastTimed = firstTimed + count - 1;
                waitAcked(manager);
                end = System.nanoTime();
                // a ping() that threw ("Could not send Message" after a 502) is still retransmitted by
                // RM: the session is ok when everything was acknowledged in the end
                ok = manager.getRetransmissionQueue().countUnacknowledged() == 0;
            } catch (Exception e) {
                error = e.toString();
                System.err.println("cxf-peer: bench session " + index + ": " + e);
                if (!waited) {
                    ready.reset();
                }
            } finally {
                if (client != null) {
                    client.destroy();
                }
                if (bus != null) {
                    bus.shutdown(true);
                }
            }
        }

        void send(Peer.PeerPort port, int i) {
            try {
                port.ping(text(i));
            } catch (RuntimeException e) {
                failed++;
                System.err.println("cxf-peer: bench session " + index + " message " + i + " failed: " + e);
            }
        }

        void waitAcked(RMManager manager) throws InterruptedException {
            long deadline = System.currentTimeMillis() + Math.max(timeoutMs * 6L, 60000L);
            while (manager.getRetransmissionQueue().countUnacknowledged() > 0
                    && System.currentTimeMillis() < deadline) {
                Thread.sleep(1);
            }
        }

        static long maxKey(Map<Long, Long> m) {
            long max = 0;
            for (Long k : m.keySet()) {
                max = Math.max(max, k);
            }
            return max;
        }
    }

    static int run(Map<String, String> o) throws Exception {
        String url = Peer.req(o, "url");
        String rm = o.getOrDefault("rm", "1.1");
        int sessions = Integer.parseInt(o.getOrDefault("sessions", "1"));
        int warmup = Math.max(1, Integer.parseInt(o.getOrDefault("warmup", "1"))); // creates the sequence
        int count = Integer.parseInt(o.getOrDefault("count", "1000"));
        int size = Integer.parseInt(o.getOrDefault("size", "1024"));
        int timeoutMs = Integer.parseInt(o.getOrDefault("timeout", "10")) * 1000;
        CyclicBarrier ready = new CyclicBarrier(sessions + 1);
        CyclicBarrier go = new CyclicBarrier(sessions + 1);
        List<Session> ss = new ArrayList<>();
        List<Thread> ts = new ArrayList<>();
        for (int i = 0; i < sessions; i++) {
            Session s = new Session(i, url, rm, warmup, count, size, timeoutMs, ready, go);
            ss.add(s);
            Thread t = new Thread(s, "bench-" + i);
            ts.add(t);
            t.start();
        }
        boolean started = true;
        try {
            ready.await();
        } catch (java.util.concurrent.BrokenBarrierException e) {
            started = false;
        }
        System.out.println("BENCH-START");
        System.out.flush();
        long t0 = System.nanoTime();
        if (started) {
            go.await();
        } else {
            go.reset();
        }
        for (Thread t : ts) {
            t.join();
        }
        long end = t0;
        double[] lat = new double[sessions * count];
        int n = 0;
        int failed = 0;
        boolean ok = started;
        double sum = 0;
        for (Session s : ss) {
            end = Math.max(end, s.end);
            failed += s.failed;
            ok &= s.ok;
            for (long m = s.firstTimed; m <= s.lastTimed; m++) {
                Long a = s.acked.get(m);
                Long b = s.sent.get(m);
                if (a != null && b != null && n < lat.length) {
                    lat[n] = Math.max(0, a - b) / 1e6;
                    sum += lat[n++];
                }
            }
        }
        double[] l = Arrays.copyOf(lat, n);
        Arrays.sort(l);
        double elapsed = (end - t0) / 1e9;
        int total = sessions * count;
        System.out.println("BENCH {\"impl\":\"cxf\",\"rm\":" + Peer.json(rm) + ",\"ok\":" + (ok && n == total)
                + ",\"sessions\":" + sessions + ",\"messages\":" + total + ",\"latencies\":" + n + ",\"size\":" + size
                + ",\"warmup\":" + warmup + ",\"elapsed\":" + String.format("%.6f", elapsed)
                + ",\"msgs_per_s\":" + String.format("%.1f", elapsed > 0 ? total / elapsed : 0.0)
                + ",\"p50_ms\":" + String.format("%.4f", n > 0 ? l[(n - 1) / 2] : 0.0)
                + ",\"p99_ms\":" + String.format("%.4f", n > 0 ? l[(int) ((n - 1) * 0.99)] : 0.0)
                + ",\"max_ms\":" + String.format("%.4f", n > 0 ? l[n - 1] : 0.0)
                + ",\"mean_ms\":" + String.format("%.4f", n > 0 ? sum / n : 0.0)
                + ",\"client_exceptions\":" + failed + "}");
        return ok && n == total ? 0 : 1;
    }
}
