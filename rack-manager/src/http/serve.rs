//! The server loop shared by every listener: accept, admit against the connection table,
//! (TLS,) then hyper's HTTP/1.1 with deadlines, and each request checked before its body is read.

use std::{
    convert::Infallible,
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, OnceLock},
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{
    Request, Response, StatusCode,
    body::{Body, Incoming},
    header,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use rack_api::{AUTH_HEADER, AUTH_SCHEME};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
    sync::Semaphore,
    time::Sleep,
};

use super::{
    Authenticator, Handler, HttpError, Method, Reply, Req,
    conns::{Admitted, Slot, Table},
    error_body, split_url,
};
use crate::credentials::Caller;

/// A request head must be complete this long after the connection opens or its previous
/// response was sent; so this is also how long a kept-alive connection may sit idle. Ten
/// seconds is far above any real client's gap between connecting and sending its head.
pub const HEADER_DEADLINE: Duration = Duration::from_secs(10);
/// A response write that makes no progress for this long ends the connection: a client that
/// stops reading cannot hold its connection (and the response's memory) forever.
pub const WRITE_DEADLINE: Duration = Duration::from_secs(10);
/// A TLS handshake (peer port) must end within this: a real peer on a slow link needs two
/// round trips; a client trickling bytes is cut off.
pub const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(5);
/// A body must arrive within this plus its length at [`MIN_BODY_RATE`]: 10 s for small
/// bodies, 74 s for a 64 MiB image.
const BODY_DEADLINE_BASE: Duration = Duration::from_secs(10);
/// The slowest link a body is waited for at: 1 MiB/s, 8 Mbit/s.
const MIN_BODY_RATE: u64 = 1 << 20;
/// The most header lines and head bytes hyper buffers (a token header and a few more are all
/// a client sends).
const MAX_HEADERS: usize = 64;
const MAX_HEAD_BYTES: usize = 64 << 10;
/// Threads that drive every connection of every listener in the process: I/O only, the
/// handlers run on the blocking pool.
const IO_THREADS: usize = 2;
/// The blocking pool's ceiling; the listeners' [`Limits::handlers`] add up to far less.
const MAX_BLOCKING_THREADS: usize = 64;
/// Pause after a failed accept (out of file descriptors, typically) before the next.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// The caps of one listener. See [`super::conns`] for what happens when one is reached.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Open connections in all.
    pub max_connections: usize,
    /// Open connections from one source address.
    pub max_per_address: usize,
    /// Open connections that prove nothing yet: idle, sending a head, or in a TLS handshake.
    pub max_unproven: usize,
    /// Handlers running at once (each holds a blocking thread).
    pub handlers: usize,
}

/// The most body bytes a route accepts, decided from the request head before any is read.
pub type BodyLimit = fn(&Method, &[String]) -> u64;

/// Routes answered without a credential (the dashboard's sign-in page and its assets): a
/// credential they carry is still checked and passed on, but a missing or invalid one makes
/// the caller `Anonymous` instead of a 401. Their body limits must be small.
pub type PublicRoute = fn(&Method, &[String]) -> bool;

/// The cookie a dashboard session travels in, and the header its CSRF token must come back in
/// for anything but reading ([`crate::credentials::Caller::Session`]).
pub const SESSION_COOKIE: &str = "mast_session";
pub const CSRF_HEADER: &str = "x-mast-csrf";
/// How a session cookie reaches the authenticator: `session:<id>:<csrf header>`.
pub const SESSION_PREFIX: &str = "session:";

/// Names the peer a finished TLS handshake proved, or says why the client is refused.
pub type PeerOf = dyn Fn(&rustls::ServerConnection, SocketAddr) -> Result<String, String> + Send + Sync;

/// How the peer listener decides who a TLS client is.
pub struct TlsGate {
    /// While true, every connection is dropped at once (a test hook: a partitioned rack).
    pub refuse_all: Box<dyn Fn() -> bool + Send + Sync>,
    /// The peer the handshake proved, or why the connection is refused.
    pub peer_of: Box<PeerOf>,
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(IO_THREADS)
            .max_blocking_threads(MAX_BLOCKING_THREADS)
            .thread_name("rack-http")
            .enable_all()
            .build()
            .expect("the process can start its HTTP threads")
    })
}

struct Site {
    /// Checks the bearer token every request must carry; `None` on the peer port, where the TLS
    /// handshake already proved the client.
    authenticate: Option<Arc<Authenticator>>,
    /// Routes a request may reach without a credential.
    public: Option<PublicRoute>,
    body_limit: BodyLimit,
    handler: Arc<Handler>,
    handlers: Arc<Semaphore>,
}

impl Site {
    /// A site whose handlers run at most `limits.handlers` at once.
    fn new(
        authenticate: Option<Arc<Authenticator>>,
        limits: Limits,
        body_limit: BodyLimit,
        handler: Arc<Handler>,
    ) -> Arc<Site> {
        Arc::new(Site {
            authenticate,
            public: None,
            body_limit,
            handler,
            handlers: Arc::new(Semaphore::new(limits.handlers)),
        })
    }
}

/// Serves `handler` on `listener`, each request's bearer token checked by `authenticate`, but
/// for the routes `public` names, reachable without one; returns only if the listener fails.
pub fn serve(
    listener: std::net::TcpListener,
    limits: Limits,
    authenticate: Arc<Authenticator>,
    public: Option<PublicRoute>,
    body_limit: BodyLimit,
    handler: Arc<Handler>,
) -> io::Error {
    runtime().block_on(async move {
        let listener = match async_listener(listener) {
            Ok(listener) => listener,
            Err(e) => return e,
        };
        let table = Table::new(limits);
        let mut site = Site::new(Some(authenticate), limits, body_limit, handler);
        if let Some(site) = Arc::get_mut(&mut site) {
            site.public = public;
        }
        loop {
            let (stream, _, admitted) = next_admitted(&listener, &table, &|| false).await;
            let site = site.clone();
            tokio::spawn(async move {
                let slot = admitted.slot.clone();
                tokio::select! {
                    () = serve_http(Deadlined::new(stream), site, None, slot.clone()) => {}
                    () = slot.evicted() => {}
                }
                drop(admitted);
            });
        }
    })
}

/// Serves `handler` over TLS on `listener` in the background: only clients that `gate` names
/// a peer get past the handshake, and their requests carry that name in [`Req::peer`].
pub fn spawn_tls(
    listener: std::net::TcpListener,
    limits: Limits,
    config: Arc<rustls::ServerConfig>,
    gate: TlsGate,
    body_limit: BodyLimit,
    handler: Arc<Handler>,
) {
    runtime().spawn(async move {
        let listener = match async_listener(listener) {
            Ok(listener) => listener,
            Err(e) => {
                tracing::info!("the peer listener failed: {e}");
                return;
            }
        };
        let site = Site::new(None, limits, body_limit, handler);
        tls_loop(listener, limits, config, Some(Arc::new(gate)), site).await;
    });
}

/// Serves `handler` over TLS on `listener` to clients without certificates, each request's
/// bearer token checked by `authenticate` (an agent's API: the manager pins the agent's
/// certificate and proves itself with its token); returns only if the listener fails.
pub fn serve_tls(
    listener: std::net::TcpListener,
    limits: Limits,
    config: Arc<rustls::ServerConfig>,
    authenticate: Arc<Authenticator>,
    body_limit: BodyLimit,
    handler: Arc<Handler>,
) -> io::Error {
    runtime().block_on(async move {
        let listener = match async_listener(listener) {
            Ok(listener) => listener,
            Err(e) => return e,
        };
        let site = Site::new(Some(authenticate), limits, body_limit, handler);
        tls_loop(listener, limits, config, None, site).await
    })
}

/// Accepts TLS connections forever. With a `gate`, the handshake must prove a peer (whose
/// connection is then never evicted); without one, the client is proved by its requests' tokens.
async fn tls_loop(
    listener: tokio::net::TcpListener,
    limits: Limits,
    config: Arc<rustls::ServerConfig>,
    gate: Option<Arc<TlsGate>>,
    site: Arc<Site>,
) -> io::Error {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let table = Table::new(limits);
    let never = || false;
    loop {
        let refuse_all: &(dyn Fn() -> bool + Send + Sync) = match &gate {
            Some(gate) => &*gate.refuse_all,
            None => &never,
        };
        let (stream, remote, admitted) = next_admitted(&listener, &table, refuse_all).await;
        let (site, gate, acceptor) = (site.clone(), gate.clone(), acceptor.clone());
        tokio::spawn(async move {
            let slot = admitted.slot.clone();
            let work = async {
                let handshake = tokio::time::timeout(HANDSHAKE_DEADLINE, acceptor.accept(Deadlined::new(stream)));
                let tls = match handshake.await {
                    Ok(Ok(tls)) => tls,
                    // Gave up on: nothing worth a line per socket of a flood.
                    Err(_) => return,
                    Ok(Err(e)) => {
                        tracing::info!("TLS connection: refused {remote} in the TLS handshake: {e}");
                        return;
                    }
                };
                let Some(gate) = gate else {
                    serve_http(tls, site, None, slot.clone()).await;
                    return;
                };
                let peer = match (gate.peer_of)(tls.get_ref().1, remote) {
                    Ok(peer) => peer,
                    Err(why) => {
                        tracing::info!("peer connection: {why}");
                        return;
                    }
                };
                // A proven peer's connection is never evicted for a newcomer.
                let _proven = slot.busy();
                serve_http(tls, site, Some(peer), slot.clone()).await;
            };
            tokio::select! {
                () = work => {}
                () = slot.evicted() => {}
            }
            drop(admitted);
        });
    }
}

fn async_listener(listener: std::net::TcpListener) -> io::Result<tokio::net::TcpListener> {
    listener.set_nonblocking(true)?;
    tokio::net::TcpListener::from_std(listener)
}

/// The next connection the table admits; refused ones are closed here, without a task.
async fn next_admitted(
    listener: &tokio::net::TcpListener,
    table: &Arc<Table>,
    refuse_all: &(dyn Fn() -> bool + Send + Sync),
) -> (TcpStream, SocketAddr, Admitted) {
    loop {
        match listener.accept().await {
            Ok((stream, remote)) => {
                if refuse_all() {
                    continue;
                }
                if let Some(admitted) = table.admit(remote.ip()) {
                    let _ = stream.set_nodelay(true);
                    return (stream, remote, admitted);
                }
            }
            Err(_) => tokio::time::sleep(ACCEPT_BACKOFF).await,
        }
    }
}

async fn serve_http<I>(io: I, site: Arc<Site>, peer: Option<String>, slot: Arc<Slot>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |request| answer(site.clone(), peer.clone(), slot.clone(), request));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_DEADLINE)
        .max_buf_size(MAX_HEAD_BYTES)
        .max_headers(MAX_HEADERS)
        .keep_alive(true);
    // A failed connection (deadline, reset, malformed head) has nobody to tell.
    let _ = builder.serve_connection(TokioIo::new(io), service).await;
}

type Answer = Response<Full<Bytes>>;

async fn answer(
    site: Arc<Site>,
    peer: Option<String>,
    slot: Arc<Slot>,
    request: Request<Incoming>,
) -> Result<Answer, Infallible> {
    let method = Method::from(request.method());
    let (segments, query) = split_url(request.uri().path_and_query().map_or("/", |p| p.as_str()));
    // `GET /healthz` needs no credential (monitors, systemd, load balancers) and reveals only
    // that this listener serves; its body, if any, is never read.
    if method == Method::Get && segments.len() == 1 && segments[0] == "healthz" {
        return Ok(build(200, "text/plain", &[], b"ok\n".to_vec(), true));
    }
    let public = site.public.is_some_and(|public| public(&method, &segments));
    let caller = match &site.authenticate {
        Some(authenticate) => {
            let bearer = request
                .headers()
                .get(AUTH_HEADER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix(AUTH_SCHEME))
                .map(|v| v.trim().to_owned())
                .or_else(|| session_credential(request.headers()));
            match authenticate(bearer.as_deref()) {
                Ok(caller) => caller,
                Err(_) if public => Caller::Anonymous,
                Err(error) => return Ok(refusal(&error)),
            }
        }
        None => Caller::Anonymous,
    };
    // From here the request is authenticated (or on a proven peer link): its connection is kept.
    // A public route's anonymous request proves nothing, so its connection stays evictable.
    let _busy = (!public || caller != Caller::Anonymous).then(|| slot.busy());
    let limit = (site.body_limit)(&method, &segments);
    let announced = request.body().size_hint().exact();
    if let Some(length) = announced.filter(|&n| n > limit) {
        let error = HttpError::new(
            413,
            "too_large",
            format!("the request body is {length} bytes; {method} /{} accepts at most {limit}", segments.join("/")),
            "",
        );
        return Ok(refusal(&error));
    }
    let deadline = BODY_DEADLINE_BASE + Duration::from_secs(announced.unwrap_or(limit).min(limit) / MIN_BODY_RATE);
    let limited = Limited::new(request.into_body(), usize::try_from(limit).unwrap_or(usize::MAX));
    let body = match tokio::time::timeout(deadline, limited.collect()).await {
        Ok(Ok(collected)) => collected.to_bytes().to_vec(),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            let error = HttpError::new(413, "too_large", format!("the request body is over {limit} bytes"), "");
            return Ok(refusal(&error));
        }
        Ok(Err(e)) => {
            return Ok(refusal(&HttpError::bad_request(format!("the request body could not be read: {e}"), "")));
        }
        Err(_) => {
            let error = HttpError::new(
                408,
                "timeout",
                format!("the request body did not arrive within {} s", deadline.as_secs()),
                "retry on a faster link",
            );
            return Ok(refusal(&error));
        }
    };
    let req = Req { method, segments, query, body, peer, caller };
    let Ok(permit) = site.handlers.clone().acquire_owned().await else {
        return Ok(refusal(&HttpError::internal("the server is shutting down")));
    };
    let handler = site.handler.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        handler(&req)
    })
    .await;
    Ok(match outcome {
        Ok(Ok(reply)) => reply_response(reply),
        Ok(Err(error)) => error_response(&error, false),
        Err(_) => error_response(&HttpError::internal("the request's handler failed (a bug: see the output)"), false),
    })
}

/// A dashboard session's cookie and CSRF header as one credential (see [`SESSION_PREFIX`]).
fn session_credential(headers: &hyper::HeaderMap) -> Option<String> {
    let id = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(SESSION_COOKIE)?.strip_prefix('='))?;
    let csrf = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("");
    Some(format!("{SESSION_PREFIX}{id}:{csrf}"))
}

fn reply_response(reply: Reply) -> Answer {
    build(reply.status, reply.content_type, &reply.headers, reply.body, false)
}

/// An answer given without reading the body: the connection closes after it, since the unread
/// body is still on the wire.
fn refusal(error: &HttpError) -> Answer {
    error_response(error, true)
}

fn error_response(error: &HttpError, close: bool) -> Answer {
    build(error.status, "application/json", &[], error_body(error), close)
}

fn build(status: u16, content_type: &str, headers: &[(String, String)], body: Vec<u8>, close: bool) -> Answer {
    let mut builder = Response::builder().status(status).header(header::CONTENT_TYPE, content_type);
    for (name, value) in headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    if close {
        builder = builder.header(header::CONNECTION, "close");
    }
    builder.body(Full::new(Bytes::from(body))).unwrap_or_else(|_| {
        // Only a handler's invalid status or header lands here.
        let mut fallback = Response::new(Full::new(Bytes::from_static(b"invalid response")));
        *fallback.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        fallback
    })
}

/// A socket whose writes must make progress within [`WRITE_DEADLINE`]; reads are bounded by
/// the header, handshake and body deadlines above.
struct Deadlined<T> {
    inner: T,
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<T> Deadlined<T> {
    fn new(inner: T) -> Deadlined<T> {
        Deadlined { inner, stalled: None }
    }

    fn watch<R>(&mut self, cx: &mut Context<'_>, outcome: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        if outcome.is_ready() {
            self.stalled = None;
            return outcome;
        }
        let stalled = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(WRITE_DEADLINE)));
        match stalled.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client took nothing of the response for too long",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Deadlined<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Deadlined<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let outcome = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, outcome)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let outcome = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, outcome)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let outcome = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, outcome)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let outcome = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.watch(cx, outcome)
    }
}
