#![allow(dead_code)]
//! Drives the real `mqtt2xmpp` binary and talks to it like a user: a chat client on its own
//! account, and an MQTT publisher.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::str::FromStr;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use mqtt2xmpp::secret::Secret;
use mqtt2xmpp::xmpp_connect::{self, Connector};
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
use tokio_xmpp::jid::{BareJid, Jid};
use tokio_xmpp::parsers::message::{Id, Message};
use tokio_xmpp::parsers::presence::Presence;
use tokio_xmpp::stanzastream::{Event as XmppEvent, StanzaStream, StreamEvent};
use tokio_xmpp::Stanza;

/// The bridge (or any subcommand) running as a child process, its stderr collected.
pub struct Bot {
    child: Child,
    log: Arc<(Mutex<String>, Condvar)>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Bot {
    /// Starts `mqtt2xmpp ARGS` with `RUST_LOG` set to show the bot's info lines, and a reply
    /// burst large enough for tests that poll the bot until a reading arrives (the rate limit's
    /// own tests pass `--reply-burst`, which wins over the environment).
    pub fn spawn(args: &[&str]) -> Bot {
        let mut child = Command::new(env!("CARGO_BIN_EXE_mqtt2xmpp"))
            .args(args)
            .env("RUST_LOG", "info,mqtt2xmpp=debug")
            .env("MQTT2XMPP_REPLY_BURST", "100000")
            .env_remove("MQTT2XMPP_PASSWORD")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start mqtt2xmpp");
        let log = Arc::new((Mutex::new(String::new()), Condvar::new()));
        // Standard output and standard error both go to the log, line by line.
        let collect = |stream: Box<dyn std::io::Read + Send>| {
            let sink = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    let (text, changed) = &*sink;
                    let mut text = text.lock().unwrap();
                    text.push_str(&line);
                    text.push('\n');
                    changed.notify_all();
                }
            })
        };
        let stderr = collect(Box::new(child.stderr.take().expect("stderr piped")));
        let stdout = collect(Box::new(child.stdout.take().expect("stdout piped")));
        Bot {
            child,
            log,
            readers: vec![stderr, stdout],
        }
    }

    /// The process id (for reading its memory use from `/proc`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the process wrote so far (standard output and error, interleaved by line).
    pub fn log(&self) -> String {
        // A panic elsewhere while the lock was held must not hide the log (or abort in Drop).
        self.log.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Waits until `needle` appears at least `count` times in the log.
    pub fn wait_log(&self, needle: &str, count: usize, deadline: Duration) {
        let end = Instant::now() + deadline;
        let (text, changed) = &*self.log;
        let mut guard = text.lock().unwrap();
        while guard.matches(needle).count() < count {
            let now = Instant::now();
            if now >= end {
                let log = guard.clone();
                drop(guard); // Panic without holding the lock, so Drop can still print the log.
                panic!(
                    "{needle:?} did not appear {count} time(s) within {deadline:?}; log:\n{log}"
                );
            }
            guard = changed.wait_timeout(guard, end - now).unwrap().0;
        }
    }

    /// Waits for the process to exit by itself.
    pub fn wait_exit(&mut self, deadline: Duration) -> ExitStatus {
        let end = Instant::now() + deadline;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                // The process is gone: collect the last lines it wrote before reading the log.
                for reader in self.readers.drain(..) {
                    let _ = reader.join();
                }
                return status;
            }
            if Instant::now() >= end {
                panic!("still running after {deadline:?}; log:\n{}", self.log());
            }
            // Polling a child's exit: there is no portable blocking wait with a timeout.
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM and returns the exit status and how long the exit took.
    pub fn terminate(&mut self, deadline: Duration) -> (ExitStatus, Duration) {
        let started = Instant::now();
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success());
        let status = self.wait_exit(deadline);
        (status, started.elapsed())
    }
}

impl Drop for Bot {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- mqtt2xmpp log ---\n{}--- end of log ---", self.log());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes `password` to a file in `dir` and returns its path as a string.
pub fn password_file(dir: &Path, name: &str, password: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, format!("{password}\n")).expect("write password file");
    path.to_string_lossy().into_owned()
}

/// Publishes one message with QoS 1 and waits for the broker's acknowledgement.
pub async fn publish(port: u16, topic: &str, payload: &[u8], retain: bool) {
    let id = format!("test{:x}", rand::random::<u32>());
    let mut options = MqttOptions::new(id, "127.0.0.1", port);
    options.set_max_packet_size(2 * 1024 * 1024, 2 * 1024 * 1024);
    let (client, mut eventloop) = AsyncClient::new(options, 10);
    client
        .publish(topic, QoS::AtLeastOnce, retain, payload.to_vec())
        .await
        .expect("queue publish");
    let acked = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => break,
                Ok(_) => {}
                Err(e) => panic!("publishing to 127.0.0.1:{port}: {e}"),
            }
        }
    })
    .await;
    assert!(acked.is_ok(), "no PUBACK from the broker");
    client.disconnect().await.expect("queue disconnect");
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
}

/// A chat client logged in to the test server, like a person's Gajim or profanity.
pub struct ChatClient {
    stream: StanzaStream,
}

impl ChatClient {
    /// Logs in as `jid` on 127.0.0.1:`port`, trusting `ca_file`, and sends initial presence.
    pub async fn login(jid: &str, password: &str, port: u16, ca_file: &Path) -> ChatClient {
        let jid = Jid::from_str(jid).expect("valid JID");
        let dns =
            xmpp_connect::dns_config(jid.domain().as_str(), Some(&format!("127.0.0.1:{port}")))
                .expect("dns config");
        let tls = mqtt2xmpp::tls::client_config(Some(ca_file)).expect("tls config");
        let connector = Connector::new(dns, tls, jid.to_bare(), Secret::new(password));
        let mut stream = xmpp_connect::open_stream(jid.clone(), connector);
        let online = tokio::time::timeout(Duration::from_secs(15), async {
            while let Some(event) = stream.next().await {
                if let XmppEvent::Stream(StreamEvent::Reset { .. }) = event {
                    return;
                }
            }
            panic!("client stopped before coming online");
        })
        .await;
        assert!(online.is_ok(), "{jid} did not come online within 15 s");
        stream.send(Box::new(Presence::available().into())).await;
        ChatClient { stream }
    }

    /// Sends any stanza as it is.
    pub async fn send_stanza(&mut self, stanza: impl Into<Stanza>) {
        self.stream.send(Box::new(stanza.into())).await;
    }

    /// The next stanza of any kind, or `None` after `timeout` (stream events are skipped, except
    /// that a lost connection ends the wait with `None`).
    pub async fn next_stanza(&mut self, timeout: Duration) -> Option<Stanza> {
        tokio::time::timeout(timeout, async {
            while let Some(event) = self.stream.next().await {
                match event {
                    XmppEvent::Stanza(stanza) => return Some(stanza),
                    XmppEvent::Stream(StreamEvent::Suspended) => return None,
                    XmppEvent::Stream(_) => {}
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
    }

    /// Waits until the connection is lost (e.g. the server closed it), up to `timeout`.
    pub async fn wait_disconnected(&mut self, timeout: Duration) -> bool {
        tokio::time::timeout(timeout, async {
            while let Some(event) = self.stream.next().await {
                if let XmppEvent::Stream(StreamEvent::Suspended) = event {
                    return true;
                }
            }
            true
        })
        .await
        .unwrap_or(false)
    }

    /// Sends a message (with a fresh id if it has none).
    pub async fn send(&mut self, mut message: Message) {
        message
            .id
            .get_or_insert_with(|| Id(format!("{:x}", rand::random::<u64>())));
        self.stream.send(Box::new(message.into())).await;
    }

    /// The next message with a body from `from` (any resource), error bounces excepted, or `None`
    /// after `timeout`.
    pub async fn next_message_from(
        &mut self,
        from: &BareJid,
        timeout: Duration,
    ) -> Option<Message> {
        tokio::time::timeout(timeout, async {
            while let Some(event) = self.stream.next().await {
                if let XmppEvent::Stanza(Stanza::Message(m)) = event {
                    let sender = m.from.as_ref().map(|f| f.to_bare());
                    // Error bounces from the server (which may quote our body) are not replies.
                    let bounce = m.type_ == tokio_xmpp::parsers::message::MessageType::Error;
                    if sender.as_ref() == Some(from) && !m.bodies.is_empty() && !bounce {
                        return Some(m);
                    }
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
    }

    /// Sends `text` to `to` and returns the body of the reply.
    pub async fn ask(&mut self, to: &str, text: &str) -> String {
        let to = Jid::from_str(to).expect("valid JID");
        self.send(Message::chat(Some(to.clone())).with_body(Default::default(), text.into()))
            .await;
        let reply = self
            .next_message_from(&to.to_bare(), Duration::from_secs(10))
            .await
            .unwrap_or_else(|| panic!("no reply from {to} to {text:?} within 10 s"));
        body(&reply)
    }

    /// Asks until the reply satisfies `accept` (the bot may not have the newest reading yet).
    pub async fn ask_until(
        &mut self,
        to: &str,
        accept: impl Fn(&str) -> bool,
        deadline: Duration,
    ) -> String {
        let end = Instant::now() + deadline;
        loop {
            let reply = self.ask(to, "temperature?").await;
            if accept(&reply) {
                return reply;
            }
            assert!(
                Instant::now() < end,
                "last reply {reply:?} still not accepted after {deadline:?}"
            );
            // Polling pace, so a slow bridge is not flooded with questions.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The single body of a message.
pub fn body(message: &Message) -> String {
    message.bodies.values().next().cloned().unwrap_or_default()
}
