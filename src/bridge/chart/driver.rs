//! The client loop's side of charts: [`ChartDriver`] finds the upload service on each login,
//! turns the bot's [`Ask`]s into jobs that run beside the loop, routes the replies to the jobs'
//! IQs back to them, and hands the loop the stanzas to send. The loop calls four methods
//! ([`ChartDriver::online`], [`ChartDriver::reply`], [`ChartDriver::after_answer`] and
//! [`ChartDriver::next`]) and never waits on a chart.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::ClientConfig;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_xmpp::jid::{BareJid, Jid};
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::disco::{
    DiscoInfoQuery, DiscoInfoResult, DiscoItemsQuery, DiscoItemsResult,
};
use tokio_xmpp::parsers::http_upload::{SlotRequest, SlotResult};
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::message::{Message, MessageType};
use tokio_xmpp::parsers::oob::Oob;
use tokio_xmpp::Stanza;

use super::render;
use super::upload::{self, Service};
use crate::bridge::access::{SlidingLimit, MAX_TRACKED};
use crate::bridge::bot::{lock, Bot};

/// Charts per contact per minute; beyond, the text answer alone with a note.
pub const CHARTS_PER_MINUTE: usize = 6;

/// The note added to a text answer sent without its chart for the rate limit.
pub const LIMIT_NOTE: &str = "(No chart this time: at most 6 charts a minute.)";

/// Charts being drawn or uploaded at once, for everyone: each holds a copy of its window's
/// readings and a core while it renders, so a bot on a small board keeps answering.
pub const MAX_JOBS: usize = 8;

/// The note added to a text answer sent without its chart because [`MAX_JOBS`] are under way.
pub const BUSY_NOTE: &str = "(No chart this time: the bot is drawing others; ask again shortly.)";

/// How long an IQ of a job (disco, slot) may wait for its reply.
const IQ_TIMEOUT: Duration = Duration::from_secs(10);

/// Items of the domain asked for their disco#info, at most.
const MAX_ITEMS: usize = 32;

/// Largest PNG uploaded whatever the service allows.
pub const MAX_PNG: u64 = 4 * 1024 * 1024;

/// An IQ a job wants sent, and where its reply goes.
#[derive(Debug)]
struct IqCall {
    to: Jid,
    payload: Element,
    get: bool,
    reply: oneshot::Sender<Iq>,
}

/// A job's way to send IQs through the loop and wait for the replies.
#[derive(Debug, Clone)]
struct IqClient(mpsc::Sender<IqCall>);

impl IqClient {
    /// The payload of the result to a `get` (or `set`) of `payload` to `to`.
    async fn call(&self, to: Jid, payload: Element, get: bool) -> Result<Element, String> {
        let (reply, answer) = oneshot::channel();
        self.0
            .send(IqCall {
                to: to.clone(),
                payload,
                get,
                reply,
            })
            .await
            .map_err(|_| "the client loop is gone".to_string())?;
        match tokio::time::timeout(IQ_TIMEOUT, answer).await {
            Err(_) => Err(format!("{to} did not answer within {IQ_TIMEOUT:?}")),
            Ok(Err(_)) => Err("the connection was reset".to_string()),
            Ok(Ok(Iq::Result {
                payload: Some(payload),
                ..
            })) => Ok(payload),
            Ok(Ok(Iq::Error { error, .. })) => Err(format!(
                "{to} refused: {:?} {}",
                error.defined_condition,
                error.texts.values().next().map_or("", |t| t.as_str())
            )),
            Ok(Ok(_)) => Err(format!("{to} answered with no payload")),
        }
    }
}

/// Charts per contact within the last minute: [`CHARTS_PER_MINUTE`] each.
fn chart_limit() -> SlidingLimit {
    SlidingLimit::new(CHARTS_PER_MINUTE, Duration::from_secs(60), MAX_TRACKED)
}

/// The chart side of the client loop.
#[derive(Debug)]
pub(crate) struct ChartDriver {
    enabled: bool,
    tls: Arc<ClientConfig>,
    service: Arc<Mutex<Option<Service>>>,
    told_missing: Arc<AtomicBool>,
    calls: mpsc::Sender<IqCall>,
    calls_rx: mpsc::Receiver<IqCall>,
    done: mpsc::Sender<Vec<Stanza>>,
    done_rx: mpsc::Receiver<Vec<Stanza>>,
    pending: HashMap<String, (Jid, oneshot::Sender<Iq>)>,
    limit: SlidingLimit,
    jobs: JoinSet<()>,
}

impl ChartDriver {
    /// Charts on (`enabled`) or off (`--no-charts`), uploading over `tls`.
    pub(crate) fn new(enabled: bool, tls: Arc<ClientConfig>) -> Self {
        let (calls, calls_rx) = mpsc::channel(16);
        let (done, done_rx) = mpsc::channel(16);
        Self {
            enabled,
            tls,
            service: Arc::default(),
            told_missing: Arc::default(),
            calls,
            calls_rx,
            done,
            done_rx,
            pending: HashMap::new(),
            limit: chart_limit(),
            jobs: JoinSet::new(),
        }
    }

    /// A new session: looks for the upload service of `account`'s domain again.
    pub(crate) fn online(&mut self, bot: &Arc<Bot>, account: &BareJid) {
        if !self.enabled {
            return;
        }
        let domain = Jid::from(account.domain().to_owned());
        let iq = IqClient(self.calls.clone());
        let service = self.service.clone();
        let told = self.told_missing.clone();
        let bot = bot.clone();
        self.jobs.spawn(async move {
            let found = discover(&iq, domain.clone()).await;
            match &found {
                Ok(Some(s)) => {
                    tracing::info!(service = %s.jid, max_size = ?s.max_size, "HTTP upload service found: stats answers come with a chart");
                }
                Ok(None) | Err(_) => {
                    if !told.swap(true, Ordering::Relaxed) {
                        let why = match &found {
                            Err(e) => e.clone(),
                            _ => "no item of the domain offers urn:xmpp:http:upload:0".into(),
                        };
                        tracing::info!(%domain, why, "no HTTP upload service (XEP-0363) on the XMPP server: stats answers are text only");
                    }
                }
            }
            let found = found.ok().flatten();
            bot.charts.set_enabled(found.is_some());
            *lock(&service) = found;
        });
    }

    /// Whether `stanza` is the reply to one of the jobs' IQs (then it went to the job).
    pub(crate) fn reply(&mut self, stanza: &Stanza) -> bool {
        let Stanza::Iq(iq) = stanza else {
            return false;
        };
        let (id, from) = match iq {
            Iq::Result { id, from, .. } | Iq::Error { id, from, .. } => (id, from),
            _ => return false,
        };
        let Some((to, _)) = self.pending.get(id) else {
            return false;
        };
        // RFC 6120 §10.1: only the entity asked answers (a reply from the bot's own server to
        // a request to it may come without `from`).
        let from_ok = match from {
            Some(from) => from == to,
            None => to.node().is_none() && to.resource().is_none(),
        };
        if !from_ok {
            return false;
        }
        if let Some((_, reply)) = self.pending.remove(id) {
            let _ = reply.send(iq.clone());
        }
        true
    }

    /// After the loop answered a stanza: turns the bot's asks into jobs, taking each chart's
    /// text answer out of `out` to send after the chart. `is_room` tells rooms (no charts
    /// there) from contacts.
    pub(crate) fn after_answer(
        &mut self,
        bot: &Arc<Bot>,
        out: &mut Vec<Stanza>,
        is_room: impl Fn(&BareJid) -> bool,
        now: Instant,
    ) {
        let asks = bot.charts.take();
        let Some(service) = lock(&self.service).clone() else {
            return;
        };
        for ask in asks {
            let Ok(contact) = ask.contact.parse::<BareJid>() else {
                continue;
            };
            if is_room(&contact) {
                continue;
            }
            if !bot.chart_possible(&ask.target) {
                continue;
            }
            let held = if ask.adhoc {
                None
            } else {
                take_answer(out, &contact)
            };
            let (to, type_, thread) = match &held {
                Some(m) => (m.to.clone(), m.type_.clone(), m.thread.clone()),
                None if ask.adhoc => (Some(Jid::from(contact.clone())), MessageType::Chat, None),
                // The text answer is not there (silence): no chart either.
                None => continue,
            };
            let refused = if self.jobs.len() >= MAX_JOBS {
                tracing::info!(contact = %ask.contact, jobs = MAX_JOBS, "charts busy: answering with text alone");
                Some(BUSY_NOTE)
            } else if !self.limit.admit(&ask.contact, now) {
                tracing::info!(contact = %ask.contact, "chart rate limit: answering with text alone");
                Some(LIMIT_NOTE)
            } else {
                None
            };
            if let Some(note) = refused {
                if let Some(mut text) = held {
                    if let Some(body) = text.bodies.values_mut().next() {
                        body.push('\n');
                        body.push_str(note);
                    }
                    out.push(text.into());
                }
                continue;
            }
            let job = Job {
                bot: bot.clone(),
                ask,
                now,
                to,
                type_,
                thread,
                held,
                service: service.clone(),
                tls: self.tls.clone(),
                iq: IqClient(self.calls.clone()),
            };
            let done = self.done.clone();
            tracing::debug!(contact = %contact, "chart job started");
            self.jobs.spawn(async move {
                let out = job.run().await;
                let _ = done.send(out).await;
            });
        }
    }

    /// The next stanzas to send for the charts: a job's IQ, or a finished job's messages.
    /// Cancel-safe, for `select!`.
    pub(crate) async fn next(&mut self) -> Vec<Stanza> {
        tokio::select! {
            Some(call) = self.calls_rx.recv() => {
                self.pending.retain(|_, (_, reply)| !reply.is_closed());
                let id = format!("chart-{:x}", rand::random::<u64>());
                let iq = if call.get {
                    Iq::Get { from: None, to: Some(call.to.clone()), id: id.clone(), payload: call.payload }
                } else {
                    Iq::Set { from: None, to: Some(call.to.clone()), id: id.clone(), payload: call.payload }
                };
                self.pending.insert(id, (call.to, call.reply));
                vec![iq.into()]
            }
            Some(out) = self.done_rx.recv() => out,
            Some(_) = self.jobs.join_next(), if !self.jobs.is_empty() => Vec::new(),
        }
    }
}

/// Removes the text answer to `contact` from `out`.
fn take_answer(out: &mut Vec<Stanza>, contact: &BareJid) -> Option<Message> {
    let index = out.iter().position(|s| {
        matches!(s, Stanza::Message(m)
            if !m.bodies.is_empty() && m.to.as_ref().is_some_and(|to| to.to_bare() == *contact))
    })?;
    match out.remove(index) {
        Stanza::Message(m) => Some(m),
        _ => None,
    }
}

/// §2: disco#items of the domain, then disco#info of each item until one is the service.
async fn discover(iq: &IqClient, domain: Jid) -> Result<Option<Service>, String> {
    let items = iq
        .call(
            domain.clone(),
            DiscoItemsQuery {
                node: None,
                rsm: None,
            }
            .into(),
            true,
        )
        .await?;
    let items = DiscoItemsResult::try_from(items).map_err(|e| format!("disco#items: {e}"))?;
    for item in items.items.into_iter().take(MAX_ITEMS) {
        let Ok(info) = iq
            .call(item.jid.clone(), DiscoInfoQuery { node: None }.into(), true)
            .await
        else {
            continue;
        };
        let Ok(info) = DiscoInfoResult::try_from(info) else {
            continue;
        };
        if let Some(max_size) = upload::upload_feature(&info) {
            return Ok(Some(Service {
                jid: item.jid,
                max_size,
            }));
        }
    }
    Ok(None)
}

/// One chart on its way.
struct Job {
    bot: Arc<Bot>,
    ask: super::Ask,
    now: Instant,
    to: Option<Jid>,
    type_: MessageType,
    thread: Option<tokio_xmpp::parsers::message::Thread>,
    held: Option<Message>,
    service: Service,
    tls: Arc<ClientConfig>,
    iq: IqClient,
}

impl Job {
    /// The chart message (if all went well) and then the held text.
    async fn run(self) -> Vec<Stanza> {
        let mut out = Vec::with_capacity(2);
        match self.chart().await {
            Ok(Some(message)) => out.push(message.into()),
            // Fewer than two readings: the text says all there is.
            Ok(None) => {}
            Err(why) => tracing::warn!(
                sensor = self.ask.target,
                why,
                "chart not sent: answering with text alone"
            ),
        }
        if let Some(text) = self.held {
            out.push(text.into());
        }
        out
    }

    async fn chart(&self) -> Result<Option<Message>, String> {
        // Copying the history out of the cache and drawing both cost in proportion to the
        // readings (a week at one a second is 604 800): both off the client loop.
        let (bot, ask, now) = (self.bot.clone(), self.ask.clone(), self.now);
        let started = Instant::now();
        let drawn = tokio::task::spawn_blocking(move || {
            bot.chart_input(&ask.contact, &ask.target, ask.window, now)
                .map(|input| render::render(&input).map(|r| (input, r)))
        })
        .await
        .map_err(|e| format!("rendering stopped: {e}"))?;
        let Some(drawn) = drawn else {
            return Ok(None);
        };
        let (input, rendered) = drawn.map_err(|e| e.to_string())?;
        let size = rendered.png.len() as u64;
        let took_ms = started.elapsed().as_millis();
        tracing::info!(
            sensor = input.what,
            readings = input.samples.len(),
            size,
            took_ms,
            "chart rendered"
        );
        let limit = self.service.max_size.unwrap_or(MAX_PNG).min(MAX_PNG);
        if size > limit {
            return Err(format!(
                "the PNG has {size} bytes, more than the {limit} the upload service takes"
            ));
        }
        let request = SlotRequest {
            filename: filename(&input.what, input.end_ms),
            size,
            content_type: Some("image/png".into()),
        };
        let slot = self
            .iq
            .call(self.service.jid.clone(), request.into(), true)
            .await?;
        let slot = SlotResult::try_from(slot).map_err(|e| format!("unusable slot: {e}"))?;
        upload::put(self.tls.clone(), &slot, rendered.png, "image/png")
            .await
            .map_err(|e| e.to_string())?;
        let url = slot.get.url;
        if !url.starts_with("https://") {
            return Err(format!("the GET URL is not https: {url}"));
        }
        // XEP-0066 §3 (and XEP-0363 §5): the URL as the body and in `<x/>`, which clients show
        // inline.
        let mut message = Message::new_with_type(self.type_.clone(), self.to.clone())
            .with_body(Default::default(), url.clone())
            .with_payload(Oob { url, desc: None });
        message.thread = self.thread.clone();
        Ok(Some(message))
    }
}

/// `temp-20261205-2011.png`: the sensor's name kept to safe characters, and the time (UTC).
fn filename(what: &str, end_ms: i64) -> String {
    let name: String = what
        .chars()
        .take_while(|c| *c != ' ')
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(40)
        .collect();
    let name = if name.is_empty() {
        "chart".to_string()
    } else {
        name
    };
    format!("{name}-{}.png", end_ms.div_euclid(1000))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bridge::bot::testing::{building_bot, ALICE};
    use crate::bridge::cache::CacheLimits;
    use std::str::FromStr;
    use tokio_xmpp::parsers::stanza_error::{DefinedCondition, ErrorType, StanzaError};

    const PHONE: &str = "alice@localhost/phone";
    const UPLOAD: &str = "upload.localhost";

    /// A bot with a minute of temperatures, and a driver that knows an upload service.
    fn with_service() -> (Arc<Bot>, ChartDriver, Instant) {
        let (bot, _) = building_bot(&[ALICE], CacheLimits::default());
        let t0 = Instant::now();
        for (i, value) in ["20", "21", "23", "22"].iter().enumerate() {
            bot.ingest(
                "sensors/temperature",
                value.as_bytes(),
                false,
                t0 + Duration::from_secs(20 * i as u64),
            );
        }
        let driver = ChartDriver::new(true, crate::tls::client_config(None).unwrap());
        *lock(&driver.service) = Some(Service {
            jid: Jid::from_str(UPLOAD).unwrap(),
            max_size: Some(1 << 20),
        });
        bot.charts.set_enabled(true);
        (bot, driver, t0 + Duration::from_secs(60))
    }

    /// `stats` from alice's phone as the loop answers it: the text answer in `out`.
    fn answered(bot: &Bot, text: &str, now: Instant) -> Vec<Stanza> {
        let reply = bot.chat(ALICE, text, now).expect("an answer");
        vec![
            Message::new_with_type(MessageType::Chat, Some(Jid::from_str(PHONE).unwrap()))
                .with_body(Default::default(), reply)
                .into(),
        ]
    }

    /// The next stanzas the driver gives the loop (an empty batch is a job reaped).
    async fn next(driver: &mut ChartDriver) -> Vec<Stanza> {
        tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                let out = driver.next().await;
                if !out.is_empty() {
                    return out;
                }
            }
        })
        .await
        .expect("the driver has something to send")
    }

    #[tokio::test]
    async fn the_text_waits_for_the_chart_and_goes_alone_when_the_slot_is_refused() {
        let (bot, mut driver, now) = with_service();
        let mut out = answered(&bot, "stats temp 1h", now);
        driver.after_answer(&bot, &mut out, |_| false, now);
        assert!(out.is_empty(), "the text waits: {out:?}");
        // XEP-0363 §4: a slot request to the service for the PNG.
        let sent = next(&mut driver).await;
        let [Stanza::Iq(Iq::Get {
            to, id, payload, ..
        })] = sent.as_slice()
        else {
            panic!("not a slot request: {sent:?}");
        };
        assert_eq!(to.as_ref().map(|j| j.as_str()), Some(UPLOAD));
        let request = SlotRequest::try_from(payload.clone()).unwrap();
        assert!(request.filename.starts_with("temp-") && request.filename.ends_with(".png"));
        assert_eq!(request.content_type.as_deref(), Some("image/png"));
        assert!(request.size > 1000, "{request:?}");
        // A reply from anyone else is not the service's.
        let refusal = |from: &str| -> Stanza {
            Iq::Error {
                from: Some(Jid::from_str(from).unwrap()),
                to: None,
                id: id.clone(),
                error: StanzaError::new(
                    ErrorType::Modify,
                    DefinedCondition::NotAcceptable,
                    "en",
                    "too large",
                ),
                payload: None,
            }
            .into()
        };
        assert!(!driver.reply(&refusal("eve@localhost")));
        assert!(driver.reply(&refusal(UPLOAD)));
        // Refused: the text alone, as without charts.
        let sent = next(&mut driver).await;
        let [Stanza::Message(text)] = sent.as_slice() else {
            panic!("not the text alone: {sent:?}");
        };
        assert!(text
            .bodies
            .values()
            .next()
            .unwrap()
            .starts_with("temp (sensors/temperature), last 1 h"));
        assert_eq!(text.to.as_ref().map(|j| j.as_str()), Some(PHONE));
    }

    #[tokio::test]
    async fn no_chart_in_rooms_for_patterns_or_beyond_six_a_minute() {
        let (bot, mut driver, now) = with_service();
        // Asked in a room (the room is the "contact"): the answer goes out at once.
        bot.charts.want(
            "lab@conference.localhost",
            "temp",
            Duration::from_secs(3600),
            false,
        );
        let mut out = answered(&bot, "help", now);
        driver.after_answer(
            &bot,
            &mut out,
            |jid| jid.as_str() == "lab@conference.localhost",
            now,
        );
        assert_eq!(out.len(), 1);
        // A pattern: text alone, at once.
        let mut out = answered(&bot, "stats B/# 1h", now);
        driver.after_answer(&bot, &mut out, |_| false, now);
        assert_eq!(out.len(), 1);
        // Six charts a minute; the seventh is the text with a note.
        for _ in 0..CHARTS_PER_MINUTE {
            let mut out = answered(&bot, "stats temp 1h", now);
            driver.after_answer(&bot, &mut out, |_| false, now);
            assert!(out.is_empty());
        }
        let mut out = answered(&bot, "stats temp 1h", now);
        driver.after_answer(&bot, &mut out, |_| false, now);
        let [Stanza::Message(text)] = out.as_slice() else {
            panic!("{out:?}");
        };
        assert!(text.bodies.values().next().unwrap().ends_with(LIMIT_NOTE));
    }

    #[tokio::test]
    async fn beyond_eight_charts_under_way_the_text_goes_alone_with_a_note() {
        let (bot, mut driver, now) = with_service();
        // Six for alice now and two more a minute later: eight jobs wait for their slots.
        for at in [now; CHARTS_PER_MINUTE]
            .into_iter()
            .chain([now + Duration::from_secs(61); MAX_JOBS - CHARTS_PER_MINUTE])
        {
            let mut out = answered(&bot, "stats temp 1h", at);
            driver.after_answer(&bot, &mut out, |_| false, at);
            assert!(out.is_empty(), "{out:?}");
        }
        let later = now + Duration::from_secs(61);
        let mut out = answered(&bot, "stats temp 1h", later);
        driver.after_answer(&bot, &mut out, |_| false, later);
        let [Stanza::Message(text)] = out.as_slice() else {
            panic!("{out:?}");
        };
        assert!(text.bodies.values().next().unwrap().ends_with(BUSY_NOTE));
    }

    #[tokio::test]
    async fn a_png_over_the_services_limit_is_not_uploaded() {
        let (bot, mut driver, now) = with_service();
        lock(&driver.service).as_mut().unwrap().max_size = Some(100);
        let mut out = answered(&bot, "stats temp 1h", now);
        driver.after_answer(&bot, &mut out, |_| false, now);
        assert!(out.is_empty());
        // No slot request: straight to the text alone.
        let sent = next(&mut driver).await;
        let [Stanza::Message(text)] = sent.as_slice() else {
            panic!("not the text alone: {sent:?}");
        };
        assert!(text.payloads.is_empty());
        assert!(driver.pending.is_empty());
    }

    #[test]
    fn charts_off_means_no_asks() {
        let (bot, _) = building_bot(&[ALICE], CacheLimits::default());
        assert!(bot.chat(ALICE, "stats temp 1h", Instant::now()).is_some());
        assert!(bot.charts.take().is_empty());
    }

    #[test]
    fn six_charts_a_minute_per_contact() {
        let mut limit = chart_limit();
        let t0 = Instant::now();
        for i in 0..CHARTS_PER_MINUTE {
            assert!(limit.admit("alice@localhost", t0 + Duration::from_secs(i as u64)));
        }
        assert!(!limit.admit("alice@localhost", t0 + Duration::from_secs(10)));
        // Someone else is not affected, and a minute after the first the next one passes.
        assert!(limit.admit("bob@localhost", t0 + Duration::from_secs(10)));
        assert!(limit.admit("alice@localhost", t0 + Duration::from_secs(60)));
        assert!(!limit.admit("alice@localhost", t0 + Duration::from_secs(60)));
    }

    #[test]
    fn file_names_are_safe() {
        assert_eq!(filename("temp", 1_000_000), "temp-1000.png");
        assert_eq!(filename("a/b (x/y)", 0), "a_b-0.png");
        assert_eq!(filename("../..", 0), "_____-0.png");
        assert_eq!(filename("", 0), "chart-0.png");
    }
}
