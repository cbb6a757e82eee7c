#![allow(dead_code)]
//! A TCP proxy on loopback that can *freeze*: stop forwarding in both directions without closing
//! either side, as a phone's link does when it leaves the cell or the Wi-Fi. Neither end learns
//! of it: the client's writes and the server's writes land in the kernel's buffers, and nothing
//! comes back. Only the server's own timeouts (idle ping, write stall) can tell.
//!
//! ```text
//! let proxy = Proxy::start(server.port).await;
//! let mut bob = Raw::login(proxy.port, ...).await;   // through the proxy
//! proxy.freeze();                                      // the link dies silently
//! ```

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The proxy: listens on 127.0.0.1:`port` and forwards each connection to the target port.
pub struct Proxy {
    /// Where clients connect.
    pub port: u16,
    frozen: Arc<watch::Sender<bool>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    /// A proxy to 127.0.0.1:`target`.
    pub async fn start(target: u16) -> Proxy {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("a loopback port for the proxy");
        let port = listener.local_addr().expect("the proxy's address").port();
        let frozen = Arc::new(watch::channel(false).0);
        let subscribe = frozen.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)).await else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(forward(client_read, server_write, subscribe.subscribe()));
                tokio::spawn(forward(server_read, client_write, subscribe.subscribe()));
            }
        });
        Proxy {
            port,
            frozen,
            accept,
        }
    }

    /// Stops forwarding, in both directions and for every connection, without closing any
    /// socket: from now on nothing is read from either side.
    pub fn freeze(&self) {
        let _ = self.frozen.send(true);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Copies `from` to `to` until either ends or the proxy freezes; frozen, it holds both halves
/// open, forwarding nothing, until the test ends.
async fn forward(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut frozen: watch::Receiver<bool>,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let read = tokio::select! {
            read = from.read(&mut buffer) => read,
            _ = frozen.wait_for(|frozen| *frozen) => break,
        };
        let n = match read {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if *frozen.borrow() {
            break;
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
    // Frozen: keep both halves open and read nothing, as a dead link does. The test's runtime
    // ends this task with the test.
    std::future::pending::<()>().await;
    drop((from, to));
}
