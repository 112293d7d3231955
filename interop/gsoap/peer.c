/*
 * gSOAP WS-ReliableMessaging interop peer for wsrm (test tool only; links GPL code, never
 * distributed: see interop/README.md).
 *
 * One source file, built twice by interop/gsoap/build: against peer10.h (RM 1.0, 2005/02)
 * and peer11.h (RM 1.1, 2007/02). SOAP 1.2 + WS-Addressing 2005/08 in both.
 *
 *   service --port N [--host H] [--out FILE] [--state FILE] [--log FILE]
 *           [--oneway-acks reply|empty] [--threads|--single]
 *   client  --url URL [--count N | --lines FILE] [--oneway | --request-reply] [--out FILE]
 *           [--log FILE] [--timeout SEC] [--no-ack-requested] [--terminate-timeout SEC]
 *   client  --url URL --bench [--count N] [--warmup N] [--size BYTES] [--sessions K]
 *           [--retry-ms MS] [--timeout SEC]      (see bench_client: used by bench/run)
 *
 * The service appends one JSON line per delivered message to --out:
 *   {"sequence":"urn:uuid:...","number":N,"action":"urn:wsrm:payload/Ping","text":"message-1"}
 * The client appends one JSON line per reply received (request-reply) to --out, and prints a
 * final line "SUMMARY {json}" on stdout. Exit code 0 only when every message was acknowledged,
 * every reply (request-reply) arrived, and the sequence was closed and terminated.
 */
#include "soapH.h"
#include "peer.nsmap"
#include "wsaapi.h"
#include "wsrmapi.h"
#include "logging.h"
#include "threads.h"
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/time.h>
#include <pthread.h>

#define ACTION_PING "urn:wsrm:payload/Ping"
#define ACTION_ECHO "urn:wsrm:payload/Echo"
#define ACTION_ECHO_RESPONSE "urn:wsrm:payload/EchoResponse"

#ifdef SOAP_WSRM_2005
#define RM_VERSION "1.0"
#else
#define RM_VERSION "1.1"
#endif

static FILE *out_file = NULL;   /* delivered messages (service) or replies (client) */
static FILE *log_file = NULL;   /* raw inbound/outbound message log */
static MUTEX_TYPE app_lock = MUTEX_INITIALIZER;
static volatile sig_atomic_t stop_requested = 0;
static int oneway_acks_reply = 1; /* service: answer one-way messages with 200 + SequenceAcknowledgement */
static unsigned long delivered = 0;

static double now_s(void)
{
  struct timeval tv;
  gettimeofday(&tv, NULL);
  return tv.tv_sec + tv.tv_usec / 1e6;
}

/* Write s as a JSON string literal. */
static void json_str(FILE *f, const char *s)
{
  fputc('"', f);
  for (; s && *s; s++)
  {
    unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\')
      fprintf(f, "\\%c", c);
    else if (c == '\n')
      fputs("\\n", f);
    else if (c == '\r')
      fputs("\\r", f);
    else if (c == '\t')
      fputs("\\t", f);
    else if (c < 0x20)
      fprintf(f, "\\u%04x", c);
    else
      fputc(c, f);
  }
  fputc('"', f);
}

/* Append one JSON line: sequence id, message number (0 = unknown), action, text. */
static void record(struct soap *s, const char *action, const char *text)
{
  const char *id = NULL;
  ULONG64 num = 0;
  if (s->header && s->header->wsrm__Sequence)
  {
    id = s->header->wsrm__Sequence->Identifier;
    num = s->header->wsrm__Sequence->MessageNumber;
  }
  if (!out_file)
    return;
  fputs("{\"sequence\":", out_file);
  json_str(out_file, id ? id : "");
  fprintf(out_file, ",\"number\":%llu,\"action\":", (unsigned long long)num);
  json_str(out_file, action);
  fputs(",\"text\":", out_file);
  json_str(out_file, text ? text : "");
  fputs("}\n", out_file);
  fflush(out_file);
}

static void setup(struct soap *s)
{
  soap_register_plugin(s, soap_wsa);
  soap_register_plugin(s, soap_wsrm);
  if (log_file)
  {
    soap_register_plugin(s, logging);
    soap_set_logging_inbound(s, log_file);
    soap_set_logging_outbound(s, log_file);
  }
}

/* ------------------------------------------------------------------ service operations */

/* Send an empty-bodied SOAP envelope carrying the headers prepared in s->header (HTTP 200). */
static int send_header_only_response(struct soap *s)
{
  s->encodingStyle = NULL;
  soap_serializeheader(s);
  if (soap_begin_count(s))
    return s->error;
  if ((s->mode & SOAP_IO_LENGTH))
  {
    if (soap_envelope_begin_out(s) || soap_putheader(s) || soap_body_begin_out(s)
        || soap_body_end_out(s) || soap_envelope_end_out(s))
      return s->error;
  }
  if (soap_end_count(s) || soap_response(s, SOAP_OK) || soap_envelope_begin_out(s)
      || soap_putheader(s) || soap_body_begin_out(s) || soap_body_end_out(s)
      || soap_envelope_end_out(s) || soap_end_send(s))
    return s->error;
  return SOAP_OK;
}

int __ns__Ping(struct soap *s, char *p)
{
  int rc;
  MUTEX_LOCK(app_lock);
  if (oneway_acks_reply)
    rc = soap_wsrm_check(s);
  else
    rc = soap_wsrm_check_send_empty_response(s); /* gSOAP's recommended one-way handling: 202 first */
  if (rc)
  {
    MUTEX_UNLOCK(app_lock);
    return s->error; /* SOAP_STOP: duplicate or out of order (202 already sent), or a fault */
  }
  record(s, ACTION_PING, p);
  delivered++;
  MUTEX_UNLOCK(app_lock);
  if (!oneway_acks_reply)
    return SOAP_OK;
  /* WCF-style: answer the one-way message with a header-only SequenceAcknowledgement. */
  if (soap_wsrm_reply_num(s, 0))
    return s->error;
  if (s->header)
  {
    s->header->wsrm__Sequence = NULL; /* the reply carries no message of the offered sequence */
    s->header->__sizeAckRequested = 0;
  }
  /* Acks go to AcksTo (anonymous: this HTTP response) whatever wsa:ReplyTo says; CXF sends
   * one-way messages with ReplyTo=none, for which soap_wsa_reply() would suppress the answer. */
  if (s->header)
  {
    s->header->wsa5__MessageID = (char *)soap_wsa_rand_uuid(s);
    s->header->wsa5__RelatesTo = NULL;
    s->header->wsa5__From = NULL;
    s->header->wsa5__ReplyTo = NULL;
    s->header->wsa5__FaultTo = NULL;
    s->header->wsa5__To = (char *)soap_wsa_anonymousURI;
    s->header->wsa5__Action = (char *)SOAP_NAMESPACE_OF_wsrm "/SequenceAcknowledgement";
  }
  return send_header_only_response(s);
}

int __ns__Echo(struct soap *s, char *p, char **reply)
{
  MUTEX_LOCK(app_lock);
  if (soap_wsrm_check(s))
  {
    MUTEX_UNLOCK(app_lock);
    return s->error;
  }
  record(s, ACTION_ECHO, p);
  delivered++;
  MUTEX_UNLOCK(app_lock);
  *reply = p;
  return soap_wsrm_reply(s, NULL, ACTION_ECHO_RESPONSE);
}

/* Required by soapcpp2 -a: relayed faults. */
int SOAP_ENV__Fault(struct soap *s, char *faultcode, char *faultstring, char *faultactor,
                    struct SOAP_ENV__Detail *detail, struct SOAP_ENV__Code *code,
                    struct SOAP_ENV__Reason *reason, char *node, char *role,
                    struct SOAP_ENV__Detail *detail12)
{
  (void)faultcode; (void)faultactor; (void)detail; (void)code; (void)node; (void)role;
  (void)detail12;
  fprintf(stderr, "gsoap-peer: relayed fault received: %s\n",
          faultstring ? faultstring : (reason && reason->SOAP_ENV__Text ? reason->SOAP_ENV__Text : "?"));
  return soap_send_empty_response(s, 202);
}

/* ------------------------------------------------------------------ service */

static void on_signal(int sig)
{
  (void)sig;
  stop_requested = 1;
}

static void *serve_thread(void *arg)
{
  struct soap *t = (struct soap *)arg;
  THREAD_DETACH(THREAD_ID);
  if (soap_serve(t) && t->error != SOAP_STOP && t->error != SOAP_EOF && t->error != 202)
    soap_print_fault(t, stderr);
  soap_destroy(t);
  soap_end(t);
  soap_free(t);
  return NULL;
}

static int service(const char *host, int port, const char *state_path, int threaded)
{
  struct soap *s = soap_new1(SOAP_IO_KEEPALIVE | SOAP_XML_INDENT * 0);
  FILE *st;
  setup(s);
  s->bind_flags = SO_REUSEADDR;
  s->send_timeout = 30;
  s->recv_timeout = 30;
  if (!soap_valid_socket(soap_bind(s, host, port, 64)))
  {
    soap_print_fault(s, stderr);
    return 1;
  }
  fprintf(stderr, "gsoap-peer: RM %s service listening on http://%s:%d/\n", RM_VERSION, host, port);
  s->accept_timeout = -200000; /* 200 ms: pulse acks and check for a stop request */
  while (!stop_requested)
  {
    if (!soap_valid_socket(soap_accept(s)))
    {
      if (s->errnum && !stop_requested)
      {
        soap_print_fault(s, stderr);
        return 1;
      }
      soap_wsrm_pulse(s, -10000);
      continue;
    }
    if (threaded)
    {
      struct soap *t = soap_copy(s);
      THREAD_TYPE tid;
      if (!t)
        return 1;
      while (THREAD_CREATE(&tid, serve_thread, (void *)t))
        usleep(1000);
    }
    else
    {
      if (soap_serve(s) && s->error != SOAP_STOP && s->error != SOAP_EOF && s->error != 202)
        soap_print_fault(s, stderr);
      soap_destroy(s);
      soap_end(s);
    }
  }
  usleep(300000); /* let in-flight threads finish */
  fprintf(stderr, "gsoap-peer: stopping, %lu messages delivered\n", delivered);
  if (state_path && (st = fopen(state_path, "w")) != NULL)
  {
    soap_wsrm_dump(s, st);
    fclose(st);
  }
  else
    soap_wsrm_dump(s, stderr);
  return 0;
}

/* ------------------------------------------------------------------ client */

/* Receive the answer to a one-way message: HTTP 202 (empty, or CXF's envelope with acks), or
 * HTTP 200 with a header-only envelope (WCF style). Acks in the header are processed by the
 * wsrm plugin; the body (empty or self-closed <soap:Body/>) is skipped whatever it holds. */
static int recv_oneway_answer(struct soap *s)
{
  soap_begin(s);
  if (soap_begin_recv(s) || soap_envelope_begin_in(s) || soap_recv_header(s) || soap_body_begin_in(s))
    return soap_closesock(s);
  if (s->body)
    while (!soap_ignore_element(s))
      ;
  s->error = SOAP_OK;
  if (soap_body_end_in(s) || soap_envelope_end_in(s) || soap_end_recv(s))
    return soap_closesock(s);
  return soap_closesock(s);
}

struct lines
{
  char **v;
  size_t n;
};

static int read_lines(const char *path, struct lines *l)
{
  FILE *f = strcmp(path, "-") ? fopen(path, "r") : stdin;
  char buf[65536];
  size_t cap = 0;
  if (!f)
    return -1;
  l->v = NULL;
  l->n = 0;
  while (fgets(buf, sizeof buf, f))
  {
    size_t len = strlen(buf);
    while (len && (buf[len - 1] == '\n' || buf[len - 1] == '\r'))
      buf[--len] = '\0';
    if (l->n == cap)
    {
      cap = cap ? 2 * cap : 256;
      l->v = (char **)realloc(l->v, cap * sizeof(char *));
      if (!l->v)
        return -1;
    }
    l->v[l->n++] = strdup(buf);
  }
  if (f != stdin)
    fclose(f);
  return 0;
}

static int is_transient(int err)
{
  return err == SOAP_TCP_ERROR || err == SOAP_EOF || err == SOAP_SSL_ERROR || (err >= 502 && err <= 504);
}

static int client(const char *url, struct lines *msgs, int request_reply, int ack_requested,
                  int timeout, int terminate_timeout)
{
  struct soap *s = soap_new1(SOAP_IO_KEEPALIVE);
  soap_wsrm_sequence_handle seq = NULL;
  size_t i;
  unsigned long replies = 0, bad_replies = 0, retries = 0, sent = 0, failed = 0;
  int closed = 0, terminated = 0, terminate_answered = 0, rc, ok;
  unsigned long long nack;
  struct SOAP_ENV__Header saved;
  const char *seqid = "";
  const char *terminate_reply = "failed";
  double t0 = now_s();
  setup(s);
  s->connect_timeout = timeout;
  s->send_timeout = timeout;
  s->recv_timeout = timeout;
  /* gSOAP leaves retries to the application, as for the messages below: a CreateSequence
   * lost in transport (connection error, or an intermediary's 502/503/504) is sent again, as
   * WCF's client resends it. A response lost after the service created the sequence leaves an
   * empty sequence there, which expires by inactivity (docs/interop.md). */
  for (i = 0;; i++)
  {
    if (request_reply)
      rc = soap_wsrm_create_offer(s, url, NULL, NULL, 600000, NoDiscard, soap_wsa_rand_uuid(s), &seq);
    else
      rc = soap_wsrm_create(s, url, NULL, 600000, soap_wsa_rand_uuid(s), &seq);
    if (!rc || !is_transient(s->error) || i >= 10)
      break;
    fprintf(stderr, "gsoap-peer: CreateSequence attempt %zu failed, sending it again: ", i + 1);
    soap_print_fault(s, stderr);
    if (seq)
      soap_wsrm_seq_free(s, seq);
    seq = NULL;
    retries++;
    soap_destroy(s);
    soap_end(s);
    usleep(100000);
  }
  if (rc)
  {
    fprintf(stderr, "gsoap-peer: CreateSequence failed: ");
    soap_print_fault(s, stderr);
    printf("SUMMARY {\"ok\":false,\"error\":\"create-sequence-failed\"}\n");
    return 1;
  }
  for (i = 0; i < msgs->n; i++)
  {
    const char *action = request_reply ? ACTION_ECHO : ACTION_PING;
    int attempt = 0;
    if (ack_requested)
      rc = soap_wsrm_request_acks(s, seq, soap_wsa_rand_uuid(s), action);
    else
      rc = soap_wsrm_request(s, seq, soap_wsa_rand_uuid(s), action);
    if (rc)
    {
      soap_print_fault(s, stderr);
      break;
    }
    /* the answer to a failed attempt replaces s->header: keep the request's headers to resend
     * (without this a retried message went out with no WS-A/RM headers at all) */
    saved = *s->header;
    for (;;)
    {
      const char *to = soap_wsrm_to(seq);
      if (!to)
        to = url;
      if (request_reply)
      {
        char *reply = NULL;
        rc = soap_call___ns__Echo(s, to, action, msgs->v[i], &reply);
        if (!rc)
        {
          replies++;
          if (!reply || strcmp(reply, msgs->v[i]))
            bad_replies++;
          record(s, s->header && s->header->wsa5__Action ? s->header->wsa5__Action : "", reply);
          break;
        }
      }
      else
      {
        rc = soap_send___ns__Ping(s, to, action, msgs->v[i]);
        if (!rc)
          rc = recv_oneway_answer(s);
        if (!rc || s->error == 202 || s->error == SOAP_NO_TAG)
        {
          s->error = SOAP_OK;
          soap_closesock(s);
          break;
        }
      }
      if (s->error == 202 || s->error == SOAP_NO_TAG)
      {
        /* accepted without a reply: gSOAP answers a duplicate request-reply message with 202 */
        if (request_reply)
          fprintf(stderr, "gsoap-peer: message %zu accepted without a reply\n", i + 1);
        s->error = SOAP_OK;
        break;
      }
      fprintf(stderr, "gsoap-peer: message %zu attempt %d failed: ", i + 1, attempt + 1);
      soap_print_fault(s, stderr);
      /* Transport-level loss (connection error, or an intermediary's 502/503/504 for a dropped
       * request) is retried here; soap_wsrm_check_retry() refuses to retry HTTP errors. */
      if (!(is_transient(s->error) && attempt < 30) && soap_wsrm_check_retry(s, seq))
      {
        fprintf(stderr, "gsoap-peer: giving up on message %zu\n", i + 1);
        break;
      }
      retries++;
      attempt++;
      if (!s->header)
        soap_header(s);
      if (!s->header)
      {
        rc = s->error = SOAP_EOM;
        break;
      }
      *s->header = saved;
      usleep(100000);
    }
    if (rc && s->error)
    {
      failed++;
      break;
    }
    sent++;
    soap_destroy(s);
    soap_end(s);
  }
  if (seq->id)
    seqid = soap_strdup(NULL, seq->id);
  /* RM 1.0: LastMessage; RM 1.1: CloseSequence (its response carries the final acks) */
#ifdef SOAP_WSRM_2005
  /* The RM 1.0 LastMessage is a sequence message of its own number, cached for resend like
   * the others; every soap_wsrm_close() call numbers a new one. So a LastMessage lost in
   * transport is resent as it was, with soap_wsrm_resend(), and never by calling close
   * again: a second LastMessage is refused (LastMessageNumberExceeded), rightly. */
  if (soap_wsrm_close(s, seq, soap_wsa_rand_uuid(s)) == SOAP_OK || s->error == 202)
    closed = 1;
  else if (is_transient(s->error))
  {
    fprintf(stderr, "gsoap-peer: LastMessage %llu lost in transport, resending it: ",
            (unsigned long long)seq->num);
    soap_print_fault(s, stderr);
    /* soap_wsrm_resend() sends the cached, unacknowledged message again as it was; it reads
     * the HTTP answer but not the acknowledgement in it, so an answer other than an error
     * (an intermediary's 502, a connection error) is taken as delivery. */
    for (i = 0; i < 30; i++)
    {
      usleep(100000);
      retries++;
      if (soap_wsrm_resend(s, seq, seq->num, seq->num) == SOAP_OK)
      {
        closed = 1;
        break;
      }
      fprintf(stderr, "gsoap-peer: LastMessage resend %zu failed: ", i + 1);
      soap_print_fault(s, stderr);
      if (!is_transient(s->error))
        break;
    }
  }
#else
  for (i = 0; i < 10; i++)
  {
    if (soap_wsrm_close(s, seq, soap_wsa_rand_uuid(s)) == SOAP_OK || s->error == 202)
    {
      closed = 1;
      break;
    }
    if (!is_transient(s->error))
      break;
    usleep(100000);
  }
#endif
  if (!closed)
  {
    fprintf(stderr, "gsoap-peer: close failed: ");
    soap_print_fault(s, stderr);
  }
  for (i = 0; i < 20 && soap_wsrm_nack(seq); i++)
  {
    fprintf(stderr, "gsoap-peer: %llu unacknowledged after close, resending\n",
            (unsigned long long)soap_wsrm_nack(seq));
    soap_wsrm_resend(s, seq, 0, 0);
    retries++;
    usleep(100000);
  }
  s->recv_timeout = terminate_timeout; /* the gSOAP RM 1.0 service never answers TerminateSequence */
  for (i = 0; i < 10; i++)
  {
    rc = soap_wsrm_terminate(s, seq, soap_wsa_rand_uuid(s));
    if (rc == SOAP_OK || !(s->error >= 502 && s->error <= 504))
      break;
    usleep(100000);
  }
  if (rc == SOAP_OK || s->error == 202)
  {
    terminated = 1;
    terminate_answered = 1;
    terminate_reply = rc == SOAP_OK ? "ok" : "202";
  }
#ifdef SOAP_WSRM_2005
  else if (s->error == SOAP_EOF || s->error == SOAP_NO_DATA)
  {
    /* RM 1.0 allows TerminateSequence to be one-way: it was sent, no answer came */
    terminated = 1;
    terminate_reply = "none";
    fprintf(stderr, "gsoap-peer: no answer to TerminateSequence (RM 1.0, treated as one-way)\n");
  }
  else if (s->error == SOAP_FAULT && soap_fault_subcode(s) && strstr(soap_fault_subcode(s), "UnknownSequence"))
  {
    /* The gSOAP RM 1.0 service sometimes answers TerminateSequence with a TerminateSequence
     * whose Identifier is empty, and a WCF-like service (wsrm) answers a request-reply
     * session's with the TerminateSequence of the offered reply sequence: the plugin turns
     * either into a local UnknownSequence fault here. The request was delivered (RM 1.0
     * TerminateSequence is one-way): count it as sent. Any other fault (such as the
     * service's SequenceTerminated for a sequence it does not hold complete) is a failure. */
    terminated = 1;
    terminate_reply = "malformed";
    fprintf(stderr, "gsoap-peer: malformed answer to TerminateSequence (RM 1.0, treated as one-way): ");
    soap_print_fault(s, stderr);
  }
#endif
  else
  {
    fprintf(stderr, "gsoap-peer: terminate failed: ");
    soap_print_fault(s, stderr);
  }
  nack = (unsigned long long)soap_wsrm_nack(seq);
  ok = sent == msgs->n && !failed && nack == 0 && closed && terminated
       && (!request_reply || (replies == msgs->n && !bad_replies));
  printf("SUMMARY {\"ok\":%s,\"rm\":\"%s\",\"mode\":\"%s\",\"sent\":%lu,\"failed\":%lu,\"unacknowledged\":%llu,"
         "\"replies\":%lu,\"bad_replies\":%lu,\"retries\":%lu,\"closed\":%s,\"terminated\":%s,"
         "\"terminate_answered\":%s,\"terminate_reply\":\"%s\",\"elapsed\":%.3f,\"sequence\":",
         ok ? "true" : "false",
         RM_VERSION, request_reply ? "request-reply" : "one-way", sent, failed, nack, replies, bad_replies,
         retries, closed ? "true" : "false", terminated ? "true" : "false",
         terminate_answered ? "true" : "false", terminate_reply, now_s() - t0);
  json_str(stdout, seqid);
  printf("}\n");
  rc = ok ? 0 : 1;
  soap_wsrm_seq_free(s, seq);
  soap_destroy(s);
  soap_end(s);
  soap_free(s);
  return rc;
}


/* ------------------------------------------------------------------ bench mode */

/* client --bench: K concurrent sessions (one thread, one keep-alive connection and one sequence
 * each) send --warmup untimed then --count timed one-way messages of --size bytes of text.
 * Latency of a message = from soap_wsrm_request() until its HTTP answer carrying the
 * SequenceAcknowledgement was read (including retries after a transport-level loss). Prints
 * "BENCH-START" when every session is created (the timed window opens) and "BENCH {json}" last. */

struct bench_session
{
  const char *url;
  int index, warmup, count, size, timeout, retry_ms;
  double *lat;      /* count latencies, seconds */
  double end;       /* when the last timed message was acknowledged */
  unsigned long retries, failed;
  int ok, created;
  pthread_barrier_t *ready, *go;
};

static int cmp_double(const void *a, const void *b)
{
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static int bench_send_one(struct soap *s, soap_wsrm_sequence_handle seq, const char *url, const char *text,
                          int retry_ms, unsigned long *retries)
{
  struct SOAP_ENV__Header saved;
  int attempt;
  if (soap_wsrm_request(s, seq, soap_wsa_rand_uuid(s), ACTION_PING))
    return s->error;
  /* the answer to a failed attempt replaces s->header: keep the request's headers to resend */
  saved = *s->header;
  for (attempt = 0;; attempt++)
  {
    const char *to = soap_wsrm_to(seq);
    if (soap_send___ns__Ping(s, to ? to : url, ACTION_PING, (char *)text) == SOAP_OK
        && (recv_oneway_answer(s) == SOAP_OK || s->error == 202 || s->error == SOAP_NO_TAG))
    {
      s->error = SOAP_OK;
      soap_closesock(s);
      return SOAP_OK;
    }
    if (s->error == 202 || s->error == SOAP_NO_TAG)
    {
      s->error = SOAP_OK;
      return SOAP_OK;
    }
    if (!is_transient(s->error) || attempt >= 100)
      return s->error;
    (*retries)++;
    if (!s->header)
      soap_header(s);
    if (!s->header)
      return s->error = SOAP_EOM;
    *s->header = saved;
    if (soap_wsrm_check_retry(s, seq))
      return s->error;
    usleep(retry_ms * 1000);
  }
}

static void *bench_thread(void *arg)
{
  struct bench_session *b = (struct bench_session *)arg;
  struct soap *s = soap_new1(SOAP_IO_KEEPALIVE);
  soap_wsrm_sequence_handle seq = NULL;
  char *text = (char *)malloc((size_t)b->size + 32);
  int i, rc = 1, attempt;
  setup(s);
  s->connect_timeout = s->send_timeout = s->recv_timeout = b->timeout;
  for (attempt = 0; attempt < 100; attempt++)
  {
    rc = soap_wsrm_create(s, b->url, NULL, 3600000, soap_wsa_rand_uuid(s), &seq);
    if (!rc || !is_transient(s->error))
      break;
    usleep(b->retry_ms * 1000);
  }
  b->created = !rc;
  if (rc)
  {
    fprintf(stderr, "gsoap-peer: session %d: CreateSequence failed: ", b->index);
    soap_print_fault(s, stderr);
  }
  pthread_barrier_wait(b->ready);
  pthread_barrier_wait(b->go);
  for (i = 0; b->created && i < b->warmup + b->count; i++)
  {
    double t0 = now_s();
    int n = snprintf(text, (size_t)b->size + 32, "message-%d-", i + 1);
    if (n < b->size)
    {
      memset(text + n, 'x', (size_t)(b->size - n));
      text[b->size] = '\0';
    }
    if (bench_send_one(s, seq, b->url, text, b->retry_ms, &b->retries))
    {
      fprintf(stderr, "gsoap-peer: session %d message %d failed: ", b->index, i + 1);
      soap_print_fault(s, stderr);
      b->failed++;
      break;
    }
    if (i >= b->warmup)
      b->lat[i - b->warmup] = now_s() - t0;
    soap_destroy(s);
    soap_end(s);
  }
  b->end = now_s();
  if (b->created)
  {
    for (i = 0; i < 10; i++)
    {
      if (soap_wsrm_close(s, seq, soap_wsa_rand_uuid(s)) == SOAP_OK || s->error == 202 || !is_transient(s->error))
        break;
      usleep(b->retry_ms * 1000);
    }
    s->recv_timeout = 1; /* the gSOAP RM 1.0 service may never answer TerminateSequence */
    for (i = 0; i < 10; i++)
      if (soap_wsrm_terminate(s, seq, soap_wsa_rand_uuid(s)) == SOAP_OK || !(s->error >= 502 && s->error <= 504))
        break;
    b->ok = !b->failed && soap_wsrm_nack(seq) == 0;
    soap_wsrm_seq_free(s, seq);
  }
  free(text);
  soap_destroy(s);
  soap_end(s);
  soap_free(s);
  return NULL;
}

static int bench_client(const char *url, int sessions, int warmup, int count, int size, int timeout, int retry_ms)
{
  struct bench_session *b = (struct bench_session *)calloc((size_t)sessions, sizeof *b);
  pthread_t *tid = (pthread_t *)calloc((size_t)sessions, sizeof *tid);
  pthread_barrier_t ready, go;
  double *all, t0, end = 0, sum = 0;
  size_t n = 0;
  unsigned long retries = 0, failed = 0;
  int i, j, ok = 1, created = 0;
  if (!b || !tid || sessions < 1 || count < 1 || size < 16)
    return 2;
  pthread_barrier_init(&ready, NULL, (unsigned)sessions + 1);
  pthread_barrier_init(&go, NULL, (unsigned)sessions + 1);
  for (i = 0; i < sessions; i++)
  {
    b[i].url = url;
    b[i].index = i;
    b[i].warmup = warmup;
    b[i].count = count;
    b[i].size = size;
    b[i].timeout = timeout;
    b[i].retry_ms = retry_ms;
    b[i].lat = (double *)calloc((size_t)count, sizeof(double));
    b[i].ready = &ready;
    b[i].go = &go;
    if (!b[i].lat || pthread_create(&tid[i], NULL, bench_thread, &b[i]))
      return 1;
  }
  pthread_barrier_wait(&ready); /* every CreateSequence done */
  printf("BENCH-START\n");
  t0 = now_s();
  pthread_barrier_wait(&go);
  for (i = 0; i < sessions; i++)
    pthread_join(tid[i], NULL);
  all = (double *)calloc((size_t)sessions * (size_t)count, sizeof(double));
  for (i = 0; i < sessions; i++)
  {
    created += b[i].created;
    ok = ok && b[i].ok;
    retries += b[i].retries;
    failed += b[i].failed;
    if (b[i].end > end)
      end = b[i].end;
    for (j = 0; j < count && all; j++)
      if (b[i].lat[j] > 0)
      {
        all[n++] = b[i].lat[j];
        sum += b[i].lat[j];
      }
  }
  if (all && n)
    qsort(all, n, sizeof(double), cmp_double);
  printf("BENCH {\"impl\":\"gsoap\",\"rm\":\"%s\",\"ok\":%s,\"sessions\":%d,\"created\":%d,\"messages\":%zu,"
         "\"size\":%d,\"warmup\":%d,\"elapsed\":%.6f,\"msgs_per_s\":%.1f,\"p50_ms\":%.4f,\"p99_ms\":%.4f,"
         "\"max_ms\":%.4f,\"mean_ms\":%.4f,\"retries\":%lu,\"failed\":%lu}\n",
         RM_VERSION, ok && n == (size_t)sessions * (size_t)count ? "true" : "false", sessions, created, n, size,
         warmup, end - t0, n ? n / (end - t0) : 0.0, n ? 1e3 * all[(n - 1) / 2] : 0.0,
         n ? 1e3 * all[(size_t)((n - 1) * 0.99)] : 0.0, n ? 1e3 * all[n - 1] : 0.0, n ? 1e3 * sum / n : 0.0,
         retries, failed);
  return ok ? 0 : 1;
}

/* ------------------------------------------------------------------ main */

static void usage(void)
{
  fprintf(stderr,
          "usage: gsoap-peer-rm%s service --port N [--host 127.0.0.1] [--out FILE] [--state FILE]\n"
          "                     [--log FILE] [--oneway-acks reply|empty] [--single]\n"
          "       gsoap-peer-rm%s client --url URL [--count N | --lines FILE] [--oneway|--request-reply]\n"
          "                     [--out FILE] [--log FILE] [--timeout SEC] [--terminate-timeout SEC]\n"
          "                     [--no-ack-requested]\n"
          "       gsoap-peer-rm%s client --url URL --bench [--count N] [--warmup N] [--size BYTES]\n"
          "                     [--sessions K] [--retry-ms MS] [--timeout SEC]\n",
          RM_VERSION[2] == '0' ? "10" : "11", RM_VERSION[2] == '0' ? "10" : "11",
          RM_VERSION[2] == '0' ? "10" : "11");
}

int main(int argc, char **argv)
{
  const char *mode, *host = "127.0.0.1", *url = NULL, *out = NULL, *state = NULL, *log = NULL,
                    *lines_path = NULL;
  int port = 0, count = 10, request_reply = 0, threaded = 1, ack_requested = 1, timeout = 10,
      terminate_timeout = 3, i, bench = 0, sessions = 1, warmup = 0, size = 1024, retry_ms = 100;
  struct lines msgs;
  setvbuf(stdout, NULL, _IONBF, 0);
  setvbuf(stderr, NULL, _IONBF, 0);
  if (argc < 2)
  {
    usage();
    return 2;
  }
  mode = argv[1];
  for (i = 2; i < argc; i++)
  {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define TAKE(var) do { if (!v) { usage(); return 2; } var = v; i++; } while (0)
    if (!strcmp(a, "--port")) { const char *p; TAKE(p); port = atoi(p); }
    else if (!strcmp(a, "--host")) TAKE(host);
    else if (!strcmp(a, "--url")) TAKE(url);
    else if (!strcmp(a, "--out")) TAKE(out);
    else if (!strcmp(a, "--state")) TAKE(state);
    else if (!strcmp(a, "--log")) TAKE(log);
    else if (!strcmp(a, "--lines")) TAKE(lines_path);
    else if (!strcmp(a, "--count")) { const char *p; TAKE(p); count = atoi(p); }
    else if (!strcmp(a, "--timeout")) { const char *p; TAKE(p); timeout = atoi(p); }
    else if (!strcmp(a, "--terminate-timeout")) { const char *p; TAKE(p); terminate_timeout = atoi(p); }
    else if (!strcmp(a, "--oneway-acks"))
    {
      const char *p;
      TAKE(p);
      if (!strcmp(p, "reply")) oneway_acks_reply = 1;
      else if (!strcmp(p, "empty")) oneway_acks_reply = 0;
      else { usage(); return 2; }
    }
    else if (!strcmp(a, "--bench")) bench = 1;
    else if (!strcmp(a, "--sessions")) { const char *p; TAKE(p); sessions = atoi(p); }
    else if (!strcmp(a, "--warmup")) { const char *p; TAKE(p); warmup = atoi(p); }
    else if (!strcmp(a, "--size")) { const char *p; TAKE(p); size = atoi(p); }
    else if (!strcmp(a, "--retry-ms")) { const char *p; TAKE(p); retry_ms = atoi(p); }
    else if (!strcmp(a, "--request-reply")) request_reply = 1;
    else if (!strcmp(a, "--oneway")) request_reply = 0;
    else if (!strcmp(a, "--single")) threaded = 0;
    else if (!strcmp(a, "--no-ack-requested")) ack_requested = 0;
    else if (!strcmp(a, "--rm"))
    {
      const char *p;
      TAKE(p);
      if (strcmp(p, RM_VERSION))
      {
        fprintf(stderr, "gsoap-peer: this binary speaks RM %s, not %s\n", RM_VERSION, p);
        return 2;
      }
    }
    else { usage(); return 2; }
#undef TAKE
  }
  if (out && !(out_file = fopen(out, "a")))
  {
    perror(out);
    return 2;
  }
  if (log && !(log_file = fopen(log, "a")))
  {
    perror(log);
    return 2;
  }
  if (log_file)
    setvbuf(log_file, NULL, _IONBF, 0);
  signal(SIGPIPE, SIG_IGN);
  if (!strcmp(mode, "service") || !strcmp(mode, "server"))
  {
    if (port <= 0)
    {
      usage();
      return 2;
    }
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    return service(host, port, state, threaded);
  }
  if (!strcmp(mode, "client"))
  {
    if (!url)
    {
      usage();
      return 2;
    }
    if (bench)
      return bench_client(url, sessions, warmup, count, size, timeout, retry_ms);
    if (lines_path)
    {
      if (read_lines(lines_path, &msgs))
      {
        perror(lines_path);
        return 2;
      }
    }
    else
    {
      int k;
      char buf[32];
      msgs.n = count > 0 ? (size_t)count : 0;
      msgs.v = (char **)calloc(msgs.n ? msgs.n : 1, sizeof(char *));
      for (k = 0; k < count; k++)
      {
        snprintf(buf, sizeof buf, "message-%d", k + 1);
        msgs.v[k] = strdup(buf);
      }
    }
    return client(url, &msgs, request_reply, ack_requested, timeout, terminate_timeout);
  }
  usage();
  return 2;
}
