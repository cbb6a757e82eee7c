#![allow(dead_code)]
//! Keeping a loopback port for a server while it is down, so that nothing else takes the port
//! before the server starts again on it.
//!
//! Between a server's stop and its restart on the same port, any process on the machine may be
//! given that port: by binding port 0 (another test's `free_port`), or as the ephemeral source
//! port of an outgoing connection. The server then cannot start again. A [`PortHold`] closes
//! that window for as long as the outage lasts.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::net::TcpSocket;

/// How long [`PortHold::new`] waits for a port its server has just closed to be free.
const RELEASE_DEADLINE: Duration = Duration::from_secs(5);

/// A socket bound to `127.0.0.1:port` with `SO_REUSEADDR`, never listening.
///
/// While it exists, connections to the port are refused exactly as if nothing were there, and
/// the kernel hands the port to nobody else (neither to a bind of port 0 nor as an ephemeral
/// port). A server that binds the port with `SO_REUSEADDR` can still listen on it: mosquitto,
/// Prosody (LuaSocket) and every tokio listener set that option, and Linux lets such a bind share
/// the port with sockets that are not listening. Drop the hold once the server is back.
pub struct PortHold {
    port: u16,
    _socket: TcpSocket,
}

impl PortHold {
    /// Holds `port`, whose server has stopped.
    ///
    /// A listener closed by this process may stay open for a moment: a child process that
    /// another thread forks at that time holds a copy of every descriptor until it executes its
    /// program (descriptors are close-on-exec). So an "address in use" is retried until
    /// [`RELEASE_DEADLINE`].
    pub fn new(port: u16) -> PortHold {
        let started = Instant::now();
        loop {
            match Self::bind(port) {
                Ok(hold) => return hold,
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                    assert!(
                        started.elapsed() < RELEASE_DEADLINE,
                        "cannot hold 127.0.0.1:{port}: still in use {RELEASE_DEADLINE:?} after \
                         its server stopped"
                    );
                    // Polling: the kernel does not tell when a port becomes free.
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => panic!("cannot hold 127.0.0.1:{port}: {e}"),
            }
        }
    }

    /// Holds a free port chosen by the kernel: a port for a server that is not started yet.
    pub fn any() -> PortHold {
        Self::bind(0).unwrap_or_else(|e| panic!("cannot hold a free port on 127.0.0.1: {e}"))
    }

    /// The port held.
    pub fn port(&self) -> u16 {
        self.port
    }

    fn bind(port: u16) -> io::Result<PortHold> {
        let socket = TcpSocket::new_v4()?;
        socket.set_reuseaddr(true)?;
        socket.bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))?;
        let port = socket.local_addr()?.port();
        Ok(PortHold {
            port,
            _socket: socket,
        })
    }
}
