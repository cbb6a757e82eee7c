//! `mqtt2xmpp ask`: log in, send one message (or `count` of them, one after the other), wait for
//! each reply, and report it. The scripted counterpart of typing "temp?" into a chat client.

use std::time::{Duration, Instant};

use futures::StreamExt;
use thiserror::Error;
use tokio_xmpp::jid::Jid;
use tokio_xmpp::parsers::message::{Id, Message, MessageType};
use tokio_xmpp::parsers::presence::Presence;
use tokio_xmpp::stanzastream::{Event, StanzaStream, StreamEvent};
use tokio_xmpp::Stanza;

use crate::xmpp_connect::{open_stream, Connector, Fatal};

/// What to ask, of whom.
#[derive(Debug, Clone)]
pub struct AskConfig {
    /// Our account.
    pub jid: Jid,
    /// How to reach and log in to the server.
    pub connector: Connector,
    /// Whom to ask.
    pub to: Jid,
    /// The message body.
    pub message: String,
    /// Limit for logging in and for each reply.
    pub timeout: Duration,
    /// How many times to ask.
    pub count: u32,
}

/// One answer and how long it took.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// The reply's body; a link sent before it (a chart, XEP-0066) is its first line.
    pub body: String,
    /// From sending the question to receiving the reply.
    pub latency: Duration,
}

/// Why asking failed.
#[derive(Debug, Error)]
pub enum AskError {
    /// Login cannot succeed.
    #[error(transparent)]
    Login(#[from] Fatal),
    /// Not online within the timeout.
    #[error("could not log in to the XMPP server within {0:?} (is it running and reachable?)")]
    LoginTimeout(Duration),
    /// No reply within the timeout.
    #[error("no reply from {to} within {timeout:?}")]
    NoReply {
        /// Whom we asked.
        to: String,
        /// How long we waited.
        timeout: Duration,
    },
    /// The recipient's server answered with an error.
    #[error("{to} cannot be reached: {reason}")]
    Error {
        /// Whom we asked.
        to: String,
        /// The error condition and text.
        reason: String,
    },
    /// The connection went away.
    #[error("the XMPP connection closed unexpectedly")]
    Closed,
}

/// Logs in, asks `config.count` times, logs out. Returns every answer in order.
pub async fn run(config: AskConfig) -> Result<Vec<Answer>, AskError> {
    let guard = config.connector.guard();
    let mut fatal = guard.watch();
    let mut stream = open_stream(config.jid.clone(), config.connector.clone());
    let mut online = false;
    let result = async {
        // Log in.
        let login = async {
            loop {
                match stream.next().await {
                    Some(Event::Stream(StreamEvent::Reset { .. })) => return Ok(()),
                    Some(_) => {}
                    None => return Err(AskError::Closed),
                }
            }
        };
        tokio::select! {
            r = tokio::time::timeout(config.timeout, login) => {
                r.map_err(|_| AskError::LoginTimeout(config.timeout))??
            }
            Ok(()) = fatal.changed() => {
                if let Some(problem) = fatal.borrow().clone() {
                    return Err(problem.into());
                }
            }
        }
        guard.online();
        online = true;
        // Available with a negative priority: replies to our full JID reach us, but messages to
        // our bare JID keep going to the account's real clients.
        let presence = Presence::available().with_priority(-1);
        stream.send(Box::new(presence.into())).await;

        let mut answers = Vec::with_capacity(config.count as usize);
        for n in 0..config.count {
            answers.push(ask_once(&mut stream, &config, n).await?);
        }
        Ok(answers)
    }
    .await;
    if online {
        let _ = tokio::time::timeout(Duration::from_secs(2), stream.close()).await;
    }
    result
}

async fn ask_once(
    stream: &mut StanzaStream,
    config: &AskConfig,
    n: u32,
) -> Result<Answer, AskError> {
    let mut question = Message::chat(Some(config.to.clone()))
        .with_body(Default::default(), config.message.clone());
    question.id = Some(Id(format!("ask-{n}-{:x}", rand::random::<u32>())));
    let started = Instant::now();
    stream.send(Box::new(question.into())).await;
    let to_bare = config.to.to_bare();
    // The bot sends a chart as a message of its own, the link with an out-of-band element
    // (XEP-0066), before the text: keep the link and wait for the text.
    let mut links = Vec::new();
    let wait = async {
        loop {
            let Some(event) = stream.next().await else {
                return Err(AskError::Closed);
            };
            let Event::Stanza(Stanza::Message(message)) = event else {
                continue;
            };
            if message.from.as_ref().map(|f| f.to_bare()) != Some(to_bare.clone()) {
                continue;
            }
            if message.type_ == MessageType::Error {
                return Err(AskError::Error {
                    to: config.to.to_string(),
                    reason: message
                        .payloads
                        .iter()
                        .find(|p| p.name() == "error")
                        .map(|e| {
                            e.children()
                                .map(|c| c.name().to_string())
                                .collect::<Vec<_>>()
                                .join(", ")
                        })
                        .unwrap_or_else(|| "error".into()),
                });
            }
            if let Some((_, body)) = message.get_best_body(Vec::new()) {
                if message
                    .payloads
                    .iter()
                    .any(|p| p.is("x", tokio_xmpp::parsers::ns::OOB))
                {
                    links.push(body.clone());
                    continue;
                }
                links.push(body.clone());
                return Ok(Answer {
                    body: links.join("\n"),
                    latency: started.elapsed(),
                });
            }
        }
    };
    tokio::time::timeout(config.timeout, wait)
        .await
        .map_err(|_| AskError::NoReply {
            to: config.to.to_string(),
            timeout: config.timeout,
        })?
}

/// Latency summary over many answers: `(median, p90, max)`.
pub fn latency_summary(answers: &[Answer]) -> Option<(Duration, Duration, Duration)> {
    let mut sorted: Vec<Duration> = answers.iter().map(|a| a.latency).collect();
    sorted.sort();
    let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
    (!sorted.is_empty()).then(|| (at(0.5), at(0.9), at(1.0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_summary_picks_nearest_rank() {
        let answers: Vec<Answer> = (1..=10)
            .map(|ms| Answer {
                body: String::new(),
                latency: Duration::from_millis(ms),
            })
            .collect();
        let (median, p90, max) = latency_summary(&answers).unwrap();
        assert_eq!(max, Duration::from_millis(10));
        assert_eq!(p90, Duration::from_millis(9));
        assert!(median == Duration::from_millis(5) || median == Duration::from_millis(6));
        assert_eq!(latency_summary(&[]), None);
    }
}
