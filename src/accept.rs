//! The accept loop shared by the bundled XMPP server and the embedded MQTT broker: a connection
//! permit before each accept (at the cap, new clients wait in the kernel's queue instead of
//! costing memory), a growing pause after accept errors (EMFILE) instead of a busy loop, and
//! one task per connection in a `JoinSet` the caller drains at shutdown.
//!
//! One loop serves several listeners ([`bounded_any`]; the XMPP server's STARTTLS and direct
//! TLS ports): the permit is taken first and goes to whichever listener has a client, so the
//! cap counts every port together. A loop per listener, each holding a permit while it waits,
//! would keep a slot from the busy port for every idle one.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Accepts on `listener` until `shutdown`, with at most `max_connections` served at once, and
/// runs `serve` for each connection in `connections`. `what` names the service in log lines.
pub async fn bounded<F, Fut>(
    listener: &TcpListener,
    max_connections: usize,
    shutdown: CancellationToken,
    connections: &mut JoinSet<()>,
    what: &str,
    mut serve: F,
) where
    F: FnMut(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let serve = |tcp, peer, _listener: usize| serve(tcp, peer);
    bounded_any(
        &[listener],
        max_connections,
        shutdown,
        connections,
        what,
        serve,
    )
    .await
}

/// Like [`bounded`], accepting on each of `listeners`, with at most `max_connections` served
/// at once across all of them; `serve` also gets the index of the listener that accepted.
pub async fn bounded_any<F, Fut>(
    listeners: &[&TcpListener],
    max_connections: usize,
    shutdown: CancellationToken,
    connections: &mut JoinSet<()>,
    what: &str,
    mut serve: F,
) where
    F: FnMut(TcpStream, SocketAddr, usize) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    // Which listener is asked first; it moves on after each accept, so that a busy listener
    // cannot starve the others.
    let mut first = 0;
    let permits = Arc::new(Semaphore::new(max_connections));
    let mut backoff = Duration::from_millis(10);
    loop {
        // A permit first: at the connection cap, new clients wait in the kernel's queue.
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let any = std::future::poll_fn(|cx| {
            for offset in 0..listeners.len() {
                let index = (first + offset) % listeners.len();
                if let Poll::Ready(accepted) = listeners[index].poll_accept(cx) {
                    return Poll::Ready((index, accepted));
                }
            }
            Poll::Pending
        });
        let (index, accepted) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = any => accepted,
        };
        first = (index + 1) % listeners.len();
        match accepted {
            Ok((tcp, peer)) => {
                backoff = Duration::from_millis(10);
                let connection = serve(tcp, peer, index);
                connections.spawn(async move {
                    connection.await;
                    drop(permit);
                });
            }
            Err(error) => {
                // Typically EMFILE: wait instead of spinning.
                tracing::warn!("{what}: accept failed: {error}; retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
        // Reap finished connection tasks so the set does not grow.
        while connections.try_join_next().is_some() {}
    }
}
