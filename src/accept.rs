//! The accept loop shared by the bundled XMPP server and the embedded MQTT broker: a connection
//! permit before each accept (at the cap, new clients wait in the kernel's queue instead of
//! costing memory), a growing pause after accept errors (EMFILE) instead of a busy loop, and
//! one task per connection in a `JoinSet` the caller drains at shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
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
    serve: F,
) where
    F: FnMut(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(max_connections));
    bounded_by(listener, permits, shutdown, connections, what, serve).await
}

/// Like [`bounded`], with the connection permits given: listeners that share `permits` share
/// one connection cap (the XMPP server's STARTTLS and direct TLS ports).
pub async fn bounded_by<F, Fut>(
    listener: &TcpListener,
    permits: Arc<Semaphore>,
    shutdown: CancellationToken,
    connections: &mut JoinSet<()>,
    what: &str,
    mut serve: F,
) where
    F: FnMut(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
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
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((tcp, peer)) => {
                backoff = Duration::from_millis(10);
                let connection = serve(tcp, peer);
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
