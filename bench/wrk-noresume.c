/*
 * wrk-noresume.c: an LD_PRELOAD shim that makes wrk do a full TLS handshake
 * on every connection. bench/run builds it (cc -shared) and loads it only
 * for the TLS=1 full-handshake test (wrk -H "Connection: close").
 *
 * Why: wrk 4.1 reuses one SSL object per connection slot and, on reconnect,
 * calls SSL_shutdown + SSL_clear. SSL_clear keeps the SSL's session after a
 * clean shutdown, so the next SSL_connect offers it (a TLS 1.3 PSK ticket, or
 * a TLS 1.2 session ID/ticket) and the server resumes: measured against
 * HAProxy, every handshake but the first of each connection slot was a
 * resumption. With this shim, SSL_connect drops the kept session before a
 * handshake starts, so the ClientHello offers nothing to resume. bench/run
 * checks that before the load (the "session resumption" line of the report).
 *
 * Only SSL_connect is interposed; SSL_in_before() limits the reset to the
 * first call of a handshake (wrk calls SSL_connect again after each
 * WANT_READ/WANT_WRITE). No OpenSSL headers are needed.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>

typedef struct ssl_st SSL;
typedef struct ssl_session_st SSL_SESSION;
int SSL_in_before(const SSL *s);
SSL_SESSION *SSL_get_session(const SSL *s);
int SSL_set_session(SSL *s, SSL_SESSION *session);

int SSL_connect(SSL *s)
{
	static int (*real_connect)(SSL *);

	if (real_connect == NULL)
		real_connect = (int (*)(SSL *))dlsym(RTLD_NEXT, "SSL_connect");
	if (SSL_in_before(s) && SSL_get_session(s) != NULL)
		SSL_set_session(s, NULL); /* frees the kept session */
	return real_connect(s);
}
