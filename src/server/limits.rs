//! Resource limits of the bundled server, and the reader that enforces the byte-level ones.
//!
//! Every limit is a field of [`ServerLimits`] (configurable from the command line), never a
//! constant buried in the code. The byte-level limits are enforced *below* the XML parser by
//! [`LimitedReader`], so that no oversized or over-deep input is ever buffered or parsed:
//!
//! - **stanza size**: bytes read since the last complete top-level element; 10 000 before
//!   authentication, 256 KiB after (Prosody's and ejabberd's defaults are similar). Over the
//!   limit, reading fails with [`LimitExceeded::StanzaTooLarge`], which the connection turns into
//!   a `policy-violation` stream error.
//! - **nesting depth**: element depth inside a stanza, counted by [`DepthScanner`] on the raw
//!   bytes. A deep tree would otherwise cost stack when it is built and dropped recursively.
//! - **byte rate**: a token bucket; when it is empty, reading *pauses* until it refills (the
//!   kernel's socket buffer then pushes back on the sender), rather than buffering.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Limits for one server. [`ServerLimits::default`] gives the documented defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerLimits {
    /// Largest stanza after authentication, in bytes.
    pub max_stanza_bytes: usize,
    /// Largest element before authentication, in bytes (stream negotiation needs very little).
    pub max_preauth_bytes: usize,
    /// Deepest element nesting inside a stanza.
    pub max_depth: usize,
    /// Most elements in one stanza, the stanza included. Parsed elements cost far more memory
    /// than their bytes (about 200 bytes for `<a/>`), so this, not the byte limit, bounds what
    /// a stanza of tiny elements costs.
    pub max_elements: usize,
    /// Sustained bytes per second one connection may send.
    pub bytes_per_second: u32,
    /// Bytes a connection may send in a burst above the sustained rate.
    pub burst_bytes: u32,
    /// Accounts (lowercase usernames) whose sessions have no byte rate once logged in: a bot
    /// that answers many users sends far more than one person typing.
    pub unthrottled: Vec<String>,
    /// Most simultaneous connections; further ones wait in the kernel's accept queue.
    pub max_connections: usize,
    /// Most connections from one IP address that have not logged in yet; further ones are
    /// refused at once with `policy-violation`, so that one address cannot hold every slot.
    pub max_unauthenticated_per_address: usize,
    /// Time a connection has to authenticate and bind before it is closed.
    pub auth_timeout: Duration,
    /// Delay before answering a failed login, per failure (grows with failures from the same
    /// address, up to `max_login_delay`).
    pub login_failure_delay: Duration,
    /// Upper bound of the failed-login delay.
    pub max_login_delay: Duration,
    /// A connection silent for this long gets a ping; silent for twice as long, it is closed.
    pub idle_ping_after: Duration,
    /// How long a session with stream management (XEP-0198) stays resumable after its link
    /// died: stanzas for it queue up, and its contacts still see it available. After that its
    /// unacknowledged messages go to offline storage.
    pub resume_timeout: Duration,
    /// Most stanzas a session with stream management (XEP-0198) has written and not seen
    /// acknowledged; more wait unwritten until acks make room, and a client that acknowledges
    /// nothing for the write stall limit is closed. A hibernating session queues at most this
    /// many. A session that ends for either reason hands its unacknowledged messages to
    /// offline storage.
    pub max_unacked: usize,
    /// Most resumable sessions of one account at a time; beyond it, stream management is
    /// enabled without resumption.
    pub max_resumable_per_account: usize,
    /// Most presence updates held back for an inactive client (XEP-0352), one per sender;
    /// when another sender would exceed it, all of them are sent at once.
    pub max_held_presences: usize,
    /// Largest vCard (XEP-0054) an account may store, in bytes of its XML. A photo travels
    /// inside it in base64 (a third larger than the image), and a vCard set must also fit in
    /// one stanza, so a value above `max_stanza_bytes` allows nothing more.
    pub max_vcard_bytes: usize,
    /// What one account may keep in PEP (XEP-0163).
    pub pep: PepLimits,
    /// Most JIDs one account may block (XEP-0191). The router keeps every account's list in
    /// memory, so this bounds what one account costs there; a block past it is refused with
    /// `policy-violation`.
    pub max_blocklist: usize,
    /// The message archive (XEP-0313): on or off, how long and how much it keeps.
    pub archive: ArchiveLimits,
    /// The rooms (XEP-0045): how many, how full, how much they remember.
    pub muc: MucLimits,
    /// HTTP File Upload (XEP-0363): sizes, quota, expiry and the HTTPS listener's bounds.
    pub upload: crate::server::upload::UploadLimits,
    /// The server's contact addresses (XEP-0157 §4): each kind (`admin`, `abuse` …) with its
    /// URIs, in the server's disco#info.
    pub contacts: Vec<(String, Vec<String>)>,
}

/// Limits of the rooms (XEP-0045), each enforced by the room service with the error the XEP
/// names when one is hit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MucLimits {
    /// Whether the room service runs at all (`--no-muc` turns it off).
    pub enabled: bool,
    /// The service's domain; `None` is `conference.` followed by the server's domain.
    pub domain: Option<String>,
    /// Whether a new room stays locked until its creator configures it (XEP-0045 §10.1.1);
    /// otherwise it is an instant room at once. See `hub/muc/owner.rs` for why it is off by
    /// default.
    pub lock_new_rooms: bool,
    /// Most rooms one account may have created that still exist; one more is refused with
    /// `not-allowed` (XEP-0045 §10.1.1), so that one account cannot fill the service.
    pub max_rooms_per_user: usize,
    /// Most occupants of one room; one more is refused with `service-unavailable` (XEP-0045
    /// §7.2.10).
    pub max_occupants: usize,
    /// Longest nickname, in characters; longer, or one with control characters, is refused
    /// with `not-acceptable`.
    pub max_nick_chars: usize,
    /// Most messages of discussion history a room keeps and replays to a joiner (XEP-0045
    /// §7.2.15), whatever the joiner asks for.
    pub max_history: usize,
    /// Longest subject, in bytes; longer is refused with `not-acceptable`.
    pub max_subject_bytes: usize,
    /// Most items in one `muc#admin` request (a ban list sent at once, XEP-0045 §9.2); more
    /// is refused whole with `policy-violation`, so that one request cannot make the room
    /// rewrite thousands of affiliations and send as many presences.
    pub max_admin_items: usize,
    /// Most affiliations (owners, admins, members, outcasts) one room keeps; a change past it
    /// is refused with `policy-violation`. It bounds a room's memory and its lists' size.
    pub max_affiliations: usize,
    /// Groupchat messages, presence updates and invitations one occupant may send to a room
    /// per minute, sustained; over it and its burst, `resource-constraint` and nothing is
    /// delivered.
    pub messages_per_minute: u32,
    /// Messages an occupant may send at once above the sustained rate.
    pub message_burst: u32,
    /// Rooms one account may join per minute, sustained; over it and its burst the join is
    /// refused with `resource-constraint` (a join flood makes every room send presence to
    /// every occupant).
    pub joins_per_minute: u32,
    /// Joins an account may make at once (a client joining its bookmarks at login).
    pub join_burst: u32,
    /// Most `<invite/>` elements in one message (XEP-0045 §7.8.2); more is refused with
    /// `policy-violation`.
    pub max_invites_per_message: usize,
}

impl Default for MucLimits {
    fn default() -> Self {
        Self {
            enabled: true,
            domain: None,
            lock_new_rooms: false,
            max_rooms_per_user: 100,
            max_occupants: 200,
            max_nick_chars: 64,
            max_history: 20,
            max_subject_bytes: 1024,
            max_admin_items: 100,
            max_affiliations: 2000,
            messages_per_minute: 120,
            message_burst: 40,
            joins_per_minute: 60,
            join_burst: 30,
            max_invites_per_message: 10,
        }
    }
}

/// Per-account limits of PEP (XEP-0163): nodes, items, bytes. Each is enforced by the PEP
/// service before it writes, with the error XEP-0060 names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PepLimits {
    /// Most nodes per account; one more is refused with `policy-violation` +
    /// `max-nodes-exceeded`.
    pub max_nodes: usize,
    /// Most items one node keeps: what `pubsub#max_items` = `max` means, and the largest
    /// number it may be set to (`not-acceptable` above it).
    pub max_items: usize,
    /// Largest payload of one item, in bytes of XML; larger is refused with `not-acceptable` +
    /// `payload-too-big` (XEP-0060 §7.1.3.4).
    pub max_item_bytes: usize,
    /// Most bytes of payloads one account keeps in all its nodes; a publication beyond it is
    /// refused with `resource-constraint`.
    pub max_account_bytes: u64,
    /// Most client feature lists (XEP-0115 caps hashes) remembered in memory.
    pub max_cached_caps: usize,
}

impl Default for PepLimits {
    fn default() -> Self {
        Self {
            max_nodes: 100,
            max_items: 1000,
            max_item_bytes: 128 * 1024,
            max_account_bytes: 16 * 1024 * 1024,
            max_cached_caps: 1000,
        }
    }
}

/// The message archive's switch and retention (XEP-0313), per account.
///
/// The defaults keep a month of messages, and at most 10 000 per account: Prosody keeps a week
/// by default (`archive_expires_after = "1w"`), which loses the history of a user back from a
/// fortnight away; a month covers a holiday, and 10 000 messages (about 3 MB at the 300-odd
/// bytes a short chat message takes on disk, measured by `bench/run_server.py --archive`)
/// bound what a chatty bot can make an account hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveLimits {
    /// Whether one-to-one and rooms' messages are archived at all. Off: nothing is archived,
    /// stanza ids are not added (rooms stamp random ones), the account's and rooms' disco#info
    /// do not list `urn:xmpp:mam:2`, and queries get `service-unavailable` (what is already
    /// stored stays, and is expired as usual).
    pub enabled: bool,
    /// Messages older than this are deleted; `None` keeps them until the count limit.
    pub max_age: Option<Duration>,
    /// Most messages kept per account, and per room; the oldest go first.
    pub max_per_user: usize,
    /// Most results in one page of a query: a client asking for more gets this many (as
    /// Prosody does with `max_archive_query_results`), and can page on.
    pub max_page: usize,
    /// Results in a page when the client does not say (XEP-0059 `<max/>`).
    pub default_page: usize,
}

impl Default for ArchiveLimits {
    fn default() -> Self {
        Self {
            enabled: true,
            max_age: Some(Duration::from_secs(30 * 24 * 3600)),
            max_per_user: 10_000,
            max_page: 250,
            default_page: 50,
        }
    }
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            max_stanza_bytes: 256 * 1024,
            max_preauth_bytes: 10_000,
            max_depth: 64,
            max_elements: 4096,
            bytes_per_second: 64 * 1024,
            burst_bytes: 512 * 1024,
            unthrottled: Vec::new(),
            max_connections: 1024,
            max_unauthenticated_per_address: 128,
            auth_timeout: Duration::from_secs(30),
            login_failure_delay: Duration::from_secs(1),
            max_login_delay: Duration::from_secs(8),
            idle_ping_after: Duration::from_secs(300),
            resume_timeout: Duration::from_secs(600),
            max_unacked: 500,
            max_resumable_per_account: 10,
            max_held_presences: 256,
            // An avatar of up to 96 KiB (128 KiB in base64, less the vCard's other fields),
            // half the stanza limit.
            max_vcard_bytes: 128 * 1024,
            pep: PepLimits::default(),
            max_blocklist: 1000,
            archive: ArchiveLimits::default(),
            muc: MucLimits::default(),
            upload: crate::server::upload::UploadLimits::default(),
            contacts: Vec::new(),
        }
    }
}

/// Why reading was stopped.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum LimitExceeded {
    /// More bytes than allowed without completing an element.
    #[error("stanza larger than {0} bytes")]
    StanzaTooLarge(usize),
    /// Elements nested deeper than allowed.
    #[error("elements nested deeper than {0} levels")]
    TooDeep(usize),
    /// More elements in one stanza than allowed.
    #[error("more than {0} elements in one stanza")]
    TooManyElements(usize),
}

/// Tracks element depth on raw XML bytes, without parsing: `<name` opens, `</` closes, `/>`
/// closes the element it ends. Quoted attribute values, comments, processing instructions and
/// CDATA sections are skipped so that a `>` or `<` inside them is not miscounted (the parser
/// above rejects the restricted constructs anyway; the scanner only has to be robust).
///
/// Depth 1 is the stream element itself; stanzas are at depth 2.
#[derive(Debug, Clone, Default)]
pub struct DepthScanner {
    depth: usize,
    /// Elements opened since the current stanza began, the stanza included.
    elements: usize,
    state: ScanState,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum ScanState {
    #[default]
    Text,
    /// Just after `<`.
    Lt,
    /// Inside an opening tag's name or attributes.
    OpenTag,
    /// Inside an opening tag, just after `/`.
    OpenTagSlash,
    /// Inside a quoted attribute value.
    Quoted(u8),
    /// Inside a closing tag.
    CloseTag,
    /// Inside `<!…>` or `<?…>`: skipped up to the matching end marker.
    Skip { end: SkipEnd, matched: u8 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SkipEnd {
    /// `?>`
    Pi,
    /// `-->` or `]]>`: both end with two marker bytes then `>`; we accept either.
    Section,
    /// A bare `>` (DOCTYPE and other declarations).
    Decl,
}

impl DepthScanner {
    /// The current depth.
    pub fn depth(&self) -> usize {
        self.depth
    }

    /// Feeds bytes; returns the greatest depth reached while scanning them.
    pub fn feed(&mut self, bytes: &[u8]) -> usize {
        let mut deepest = self.depth;
        self.feed_until(bytes, usize::MAX, usize::MAX, &mut deepest);
        deepest
    }

    /// Feeds bytes until the depth would exceed `max` or a stanza would hold more than
    /// `max_elements` elements; returns how many bytes were consumed (all of them if no limit
    /// was exceeded) and the limit that stopped it. `deepest` tracks the greatest depth.
    fn feed_until(
        &mut self,
        bytes: &[u8],
        max: usize,
        max_elements: usize,
        deepest: &mut usize,
    ) -> (usize, Option<LimitExceeded>) {
        let mut iter = bytes.iter().copied().enumerate().peekable();
        while let Some((offset, b)) = iter.next() {
            self.state = match self.state {
                ScanState::Text => match b {
                    b'<' => ScanState::Lt,
                    _ => ScanState::Text,
                },
                ScanState::Lt => match b {
                    b'/' => ScanState::CloseTag,
                    b'?' => ScanState::Skip {
                        end: SkipEnd::Pi,
                        matched: 0,
                    },
                    b'!' => match iter.peek() {
                        Some((_, b'-')) | Some((_, b'[')) => ScanState::Skip {
                            end: SkipEnd::Section,
                            matched: 0,
                        },
                        _ => ScanState::Skip {
                            end: SkipEnd::Decl,
                            matched: 0,
                        },
                    },
                    _ => {
                        // Stop before the `<` that opens the element too many.
                        if self.depth + 1 > max {
                            let exceeded = LimitExceeded::TooDeep(max.saturating_sub(1));
                            return (offset.saturating_sub(1), Some(exceeded));
                        }
                        if self.depth >= 1 {
                            if self.elements >= max_elements {
                                let exceeded = LimitExceeded::TooManyElements(max_elements);
                                return (offset.saturating_sub(1), Some(exceeded));
                            }
                            self.elements += 1;
                        }
                        self.depth += 1;
                        *deepest = (*deepest).max(self.depth);
                        ScanState::OpenTag
                    }
                },
                ScanState::OpenTag => match b {
                    b'"' | b'\'' => ScanState::Quoted(b),
                    b'/' => ScanState::OpenTagSlash,
                    b'>' => ScanState::Text,
                    _ => ScanState::OpenTag,
                },
                ScanState::OpenTagSlash => match b {
                    b'>' => {
                        self.close();
                        ScanState::Text
                    }
                    b'"' | b'\'' => ScanState::Quoted(b),
                    _ => ScanState::OpenTag,
                },
                ScanState::Quoted(q) => {
                    if b == q {
                        ScanState::OpenTag
                    } else {
                        ScanState::Quoted(q)
                    }
                }
                ScanState::CloseTag => match b {
                    b'>' => {
                        self.close();
                        ScanState::Text
                    }
                    _ => ScanState::CloseTag,
                },
                ScanState::Skip { end, matched } => match (end, b, matched) {
                    (SkipEnd::Pi, b'?', _) => ScanState::Skip { end, matched: 1 },
                    (SkipEnd::Pi, b'>', 1) => ScanState::Text,
                    (SkipEnd::Section, b'-' | b']', m) => ScanState::Skip {
                        end,
                        matched: (m + 1).min(2),
                    },
                    (SkipEnd::Section, b'>', 2) => ScanState::Text,
                    (SkipEnd::Decl, b'>', _) => ScanState::Text,
                    _ => ScanState::Skip { end, matched: 0 },
                },
            };
        }
        (bytes.len(), None)
    }

    fn close(&mut self) {
        self.depth = self.depth.saturating_sub(1);
        if self.depth <= 1 {
            // A stanza ended (or the stream did).
            self.elements = 0;
        }
    }
}

/// Shared between a [`LimitedReader`] and the connection that owns it.
#[derive(Debug)]
pub struct Meter {
    since_element: AtomicUsize,
    limit: AtomicUsize,
    max_depth: usize,
    max_elements: usize,
    restarted: AtomicBool,
    unthrottle: AtomicBool,
    tripped: AtomicBool,
    /// The transport reported the end of its input.
    ended: AtomicBool,
    exceeded: std::sync::Mutex<Option<LimitExceeded>>,
    login_deadline: std::sync::Mutex<Option<tokio::time::Instant>>,
}

impl Meter {
    /// A meter allowing `limit` bytes per element, and the nesting and element count of
    /// `limits`.
    pub fn new(limit: usize, limits: &ServerLimits) -> Arc<Self> {
        Arc::new(Self {
            since_element: AtomicUsize::new(0),
            limit: AtomicUsize::new(limit),
            max_depth: limits.max_depth,
            max_elements: limits.max_elements,
            restarted: AtomicBool::new(false),
            unthrottle: AtomicBool::new(false),
            tripped: AtomicBool::new(false),
            ended: AtomicBool::new(false),
            exceeded: std::sync::Mutex::new(None),
            login_deadline: std::sync::Mutex::new(None),
        })
    }

    /// Sets (or clears) the time by which the client must have logged in and bound a resource;
    /// reads during negotiation stop there with a `connection-timeout` stream error.
    pub fn set_login_deadline(&self, deadline: Option<tokio::time::Instant>) {
        *self
            .login_deadline
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = deadline;
    }

    /// The login deadline, while negotiation runs.
    pub fn login_deadline(&self) -> Option<tokio::time::Instant> {
        *self
            .login_deadline
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the transport reported the end of its input: a parse error after it is a
    /// connection that ended without closing its stream (a dead link), not bad XML.
    pub fn transport_ended(&self) -> bool {
        self.ended.load(Ordering::Relaxed)
    }

    /// Call when the parser delivered a complete top-level element: its bytes no longer count.
    /// Bytes the reader already took beyond the element's end count toward the next one, so the
    /// count restarts from zero here, which errs on the side of allowing slightly more.
    pub fn element_done(&self) {
        self.since_element.store(0, Ordering::Relaxed);
    }

    /// Call when the client is to restart its stream in place (after SASL success): the depth
    /// count starts again from the new stream header.
    pub fn stream_restarted(&self) {
        self.restarted.store(true, Ordering::Relaxed);
    }

    /// Lifts the byte rate for the rest of the connection (an account in
    /// [`ServerLimits::unthrottled`] logged in).
    pub fn unthrottle(&self) {
        self.unthrottle.store(true, Ordering::Relaxed);
    }

    /// Changes the per-element limit (e.g. after authentication).
    pub fn set_limit(&self, limit: usize) {
        self.limit.store(limit, Ordering::Relaxed);
    }

    /// Whether reading was stopped by a limit (the connection then sends `policy-violation`).
    pub fn tripped(&self) -> bool {
        self.tripped.load(Ordering::Relaxed)
    }

    fn trip(&self, exceeded: LimitExceeded) {
        if let Ok(mut slot) = self.exceeded.lock() {
            *slot = Some(exceeded);
        }
        self.tripped.store(true, Ordering::Relaxed);
    }

    /// The limit that stopped reading, if one did.
    pub fn exceeded(&self) -> Option<LimitExceeded> {
        if !self.tripped() {
            return None;
        }
        self.exceeded.lock().ok().and_then(|slot| *slot)
    }
}

/// Token bucket for the byte rate: refills at the sustained rate, holds at most the burst.
#[derive(Debug)]
struct ByteRate {
    rate: f64,
    burst: f64,
    tokens: f64,
    updated: Instant,
}

impl ByteRate {
    fn new(rate: u32, burst: u32) -> Self {
        Self {
            rate: f64::from(rate.max(1)),
            burst: f64::from(burst.max(1)),
            tokens: f64::from(burst.max(1)),
            updated: Instant::now(),
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.updated = now;
    }

    /// How long until at least one token is available.
    fn wait(&self) -> Duration {
        if self.tokens >= 1.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((1.0 - self.tokens) / self.rate)
        }
    }
}

/// An `AsyncRead + AsyncWrite` wrapper that enforces [`Meter`] limits and the byte rate on the
/// read side. Writes pass through untouched.
pub struct LimitedReader<S> {
    inner: S,
    meter: Arc<Meter>,
    scanner: DepthScanner,
    bucket: ByteRate,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl<S> LimitedReader<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, meter: Arc<Meter>, bytes_per_second: u32, burst_bytes: u32) -> Self {
        Self {
            inner,
            meter,
            scanner: DepthScanner::default(),
            bucket: ByteRate::new(bytes_per_second, burst_bytes),
            sleep: None,
        }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped stream, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps, e.g. to start TLS on the raw socket (a new reader then starts at depth 0; a
    /// restart on the same reader is announced with [`Meter::stream_restarted`]).
    pub fn into_inner(self) -> S {
        self.inner
    }
}

fn limit_error(e: LimitExceeded) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, e)
}

impl<S: AsyncRead + Unpin> AsyncRead for LimitedReader<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if let Some(exceeded) = this.meter.exceeded() {
            return Poll::Ready(Err(limit_error(exceeded)));
        }
        if this.meter.restarted.swap(false, Ordering::Relaxed) {
            this.scanner = DepthScanner::default();
        }
        if this.meter.unthrottle.swap(false, Ordering::Relaxed) {
            this.bucket = ByteRate::new(u32::MAX, u32::MAX);
            this.sleep = None;
        }
        // Rate: wait for tokens before reading anything.
        if let Some(sleep) = this.sleep.as_mut() {
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            this.sleep = None;
        }
        this.bucket.refill(Instant::now());
        let wait = this.bucket.wait();
        if !wait.is_zero() {
            let mut sleep = Box::pin(tokio::time::sleep(wait));
            if sleep.as_mut().poll(cx).is_pending() {
                this.sleep = Some(sleep);
                return Poll::Pending;
            }
            this.bucket.refill(Instant::now());
        }
        // Never read more than the tokens and the stanza allowance permit.
        let limit = this.meter.limit.load(Ordering::Relaxed);
        let used = this.meter.since_element.load(Ordering::Relaxed);
        let allowance = limit.saturating_sub(used) + 1;
        let budget = (this.bucket.tokens as usize).max(1).min(allowance);
        let room = buf.remaining().min(budget);
        let mut limited = ReadBuf::new(buf.initialize_unfilled_to(room));
        match Pin::new(&mut this.inner).poll_read(cx, &mut limited) {
            Poll::Ready(Ok(())) => {
                let filled = limited.filled().len();
                if filled == 0 && room > 0 {
                    this.meter.ended.store(true, Ordering::Relaxed);
                }
                // Hand the parser everything up to the first byte over a limit (so that, for
                // instance, the stream header before an oversized element is still answered),
                // and fail the next read.
                let allowed = limit.saturating_sub(used).min(filled);
                let mut deepest = 0;
                // Depth 1 is the stream element; stanza content starts at 2.
                let max_depth = this.meter.max_depth + 1;
                let (safe, stopped) = this.scanner.feed_until(
                    &limited.filled()[..allowed],
                    max_depth,
                    this.meter.max_elements,
                    &mut deepest,
                );
                this.bucket.tokens -= filled as f64;
                this.meter
                    .since_element
                    .store(used + safe, Ordering::Relaxed);
                let exceeded = if stopped.is_some() {
                    stopped
                } else if allowed < filled {
                    Some(LimitExceeded::StanzaTooLarge(limit))
                } else {
                    None
                };
                if let Some(exceeded) = exceeded {
                    this.meter.trip(exceeded);
                    if safe == 0 {
                        return Poll::Ready(Err(limit_error(exceeded)));
                    }
                }
                buf.advance(safe);
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for LimitedReader<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn limits(max_depth: usize, max_elements: usize) -> ServerLimits {
        ServerLimits {
            max_depth,
            max_elements,
            ..ServerLimits::default()
        }
    }

    /// Everything `reader` yields: the bytes and how it ended.
    async fn read_all(mut reader: impl AsyncRead + Unpin) -> (Vec<u8>, std::io::Result<usize>) {
        let mut out = Vec::new();
        let result = reader.read_to_end(&mut out).await;
        (out, result)
    }

    fn depth_after(xml: &str) -> (usize, usize) {
        let mut s = DepthScanner::default();
        let deepest = s.feed(xml.as_bytes());
        (s.depth(), deepest)
    }

    #[test]
    fn depth_follows_elements() {
        assert_eq!(depth_after("<stream:stream xmlns='a'>"), (1, 1));
        assert_eq!(
            depth_after("<stream:stream><message><body>hi</body></message>"),
            (1, 3)
        );
        assert_eq!(depth_after("<s><a/><b x='1'/></s>"), (0, 2));
        assert_eq!(depth_after("<s><a x='/>' y=\"<\"><b/></a>"), (1, 3));
        // Comments, PIs, CDATA and declarations do not count.
        assert_eq!(
            depth_after("<?xml version='1.0'?><s><!-- <a> --><![CDATA[<b>]]>"),
            (1, 1)
        );
        assert_eq!(depth_after("<!DOCTYPE x><s>"), (1, 1));
    }

    #[test]
    fn depth_survives_arbitrary_chunking() {
        let xml = "<s><a><b c='>'><d/></b></a><e/></s>";
        for split in 0..xml.len() {
            let mut s = DepthScanner::default();
            let d1 = s.feed(&xml.as_bytes()[..split]);
            let d2 = s.feed(&xml.as_bytes()[split..]);
            assert_eq!(s.depth(), 0, "split at {split}");
            assert_eq!(d1.max(d2), 4, "split at {split}");
        }
    }

    #[tokio::test]
    async fn oversize_element_stops_reading() {
        let meter = Meter::new(100, &limits(64, 4096));
        let data = format!("<s><message>{}</message>", "x".repeat(500));
        let mut r = LimitedReader::new(data.as_bytes(), meter.clone(), 1 << 20, 1 << 20);
        let mut out = Vec::new();
        let err = r.read_to_end(&mut out).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
        assert!(
            out.len() <= 100,
            "handed {} bytes past a 100-byte limit",
            out.len()
        );
        assert!(meter.tripped());
    }

    #[tokio::test]
    async fn completed_elements_reset_the_count() {
        let meter = Meter::new(100, &limits(64, 4096));
        let data = "<s>".to_string() + &"<a/>".repeat(10);
        let mut r = LimitedReader::new(data.as_bytes(), meter.clone(), 1 << 20, 1 << 20);
        let mut buf = [0u8; 43];
        r.read_exact(&mut buf).await.unwrap();
        meter.element_done();
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).await.unwrap();
        assert!(!meter.tripped());
    }

    #[tokio::test]
    async fn deep_nesting_stops_reading() {
        let meter = Meter::new(1 << 20, &limits(10, 4096));
        let data = "<s>".to_string() + &"<a>".repeat(20);
        let mut r = LimitedReader::new(data.as_bytes(), meter.clone(), 1 << 20, 1 << 20);
        let mut out = Vec::new();
        let err = r.read_to_end(&mut out).await.unwrap_err();
        assert!(err.to_string().contains("nested deeper than 10"), "{err}");
    }

    #[tokio::test]
    async fn a_stanza_of_too_many_elements_stops_reading_before_the_one_too_many() {
        let meter = Meter::new(1 << 20, &limits(64, 100));
        // The stanza and 99 children: exactly the limit.
        let fits = format!("<s><m>{}</m>", "<a/>".repeat(99));
        let (out, result) = read_all(LimitedReader::new(
            fits.as_bytes(),
            meter.clone(),
            1 << 20,
            1 << 20,
        ))
        .await;
        assert_eq!(result.unwrap(), fits.len());
        assert_eq!(out, fits.as_bytes());
        assert!(!meter.tripped());

        let meter = Meter::new(1 << 20, &limits(64, 100));
        let over = format!("<s><m>{}</m>", "<a/>".repeat(100));
        let (out, result) = read_all(LimitedReader::new(
            over.as_bytes(),
            meter.clone(),
            1 << 20,
            1 << 20,
        ))
        .await;
        let err = result.unwrap_err();
        assert_eq!(err.to_string(), "more than 100 elements in one stanza");
        // Handed over: everything before the `<` of the 101st element.
        assert_eq!(out.len(), "<s><m>".len() + 99 * "<a/>".len());
        assert_eq!(meter.exceeded(), Some(LimitExceeded::TooManyElements(100)));
    }

    #[tokio::test]
    async fn the_element_count_is_per_stanza() {
        // 50 stanzas of 60 elements each: 3 000 in all, under a limit of 100 per stanza.
        let meter = Meter::new(1 << 20, &limits(64, 100));
        let stanza = format!("<m>{}</m>", "<a/>".repeat(59));
        let data = format!("<s>{}", stanza.repeat(50));
        let (out, result) = read_all(LimitedReader::new(
            data.as_bytes(),
            meter.clone(),
            1 << 20,
            1 << 20,
        ))
        .await;
        assert_eq!(result.unwrap(), data.len());
        assert_eq!(out.len(), data.len());
        assert!(!meter.tripped());
    }

    #[tokio::test]
    async fn a_stream_restart_starts_the_depth_count_again() {
        // Without the restart, the second header would sit at depth 2, its stanzas at 3, and
        // the second stream's stanzas would count as elements of one endless stanza.
        let meter = Meter::new(1 << 20, &limits(3, 3));
        let first = "<s><auth>x</auth>";
        let second = format!("<s>{}", "<m><b><c/></b></m>".repeat(5));
        let mut reader = LimitedReader::new(
            tokio::io::AsyncReadExt::chain(first.as_bytes(), second.as_bytes()),
            meter.clone(),
            1 << 20,
            1 << 20,
        );
        let mut head = vec![0; first.len()];
        reader.read_exact(&mut head).await.unwrap();
        meter.stream_restarted();
        let (out, result) = read_all(reader).await;
        assert_eq!(result.unwrap(), second.len());
        assert_eq!(out, second.as_bytes());
        assert!(!meter.tripped(), "{:?}", meter.exceeded());
    }

    #[tokio::test(start_paused = true)]
    async fn an_unthrottled_meter_lifts_the_rate() {
        let meter = Meter::new(1 << 20, &limits(64, 4096));
        let data = vec![b' '; 3000];
        let mut r = LimitedReader::new(&data[..], meter.clone(), 1000, 1000);
        let mut head = vec![0; 1000];
        r.read_exact(&mut head).await.unwrap();
        meter.unthrottle();
        let started = Instant::now();
        let (rest, result) = read_all(r).await;
        assert_eq!(result.unwrap(), 2000);
        assert_eq!(rest.len(), 2000);
        // Without the lift, 2000 more bytes at 1000 B/s would take 2 s.
        assert_eq!(started.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limit_pauses_instead_of_buffering() {
        let meter = Meter::new(1 << 20, &limits(64, 4096));
        let data = vec![b' '; 3000];
        let mut r = LimitedReader::new(&data[..], meter, 1000, 1000);
        let started = Instant::now();
        let mut out = Vec::new();
        r.read_to_end(&mut out).await.unwrap();
        assert_eq!(out.len(), 3000);
        // 1000 bytes of burst, then 2000 bytes at 1000 B/s.
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(1990), "{took:?}");
        assert!(took < Duration::from_millis(2100), "{took:?}");
    }
}
