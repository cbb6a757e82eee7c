//! Command-line interface. Every flag can also be set from the environment as `MQTT2XMPP_` plus
//! the flag name in upper snake case (`--mqtt-host` → `MQTT2XMPP_MQTT_HOST`), which is how the
//! systemd units configure the bot. Passwords are never flags: they come from files or from
//! `MQTT2XMPP_PASSWORD` / `MQTT2XMPP_MQTT_PASSWORD`.
//!
//! This module is a leaf: clap types and their value parsers, nothing else of the crate. What
//! the flags mean is decided in `config`, which turns them into each component's settings.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// Ask your MQTT sensors questions from any XMPP chat client.
///
/// A sensor publishes to MQTT; the bot keeps the latest reading and answers every chat message
/// with it: "21.5 °C (sensors/temperature, 3 s ago)".
#[derive(Debug, Parser)]
#[command(name = "mqtt2xmpp", version, propagate_version = true)]
pub struct Cli {
    /// More log output: -v for debug, -vv for trace. RUST_LOG, if set, takes precedence.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
// Parsed once at start: the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the bot: subscribe to an MQTT topic and answer every chat message with its latest value.
    ///
    /// Example, next to a local mosquitto and an XMPP server:
    ///
    ///   mqtt2xmpp bridge --jid bot@example.org --password-file /etc/mqtt2xmpp/xmpp-password \
    ///       --topic sensors/temperature --unit °C
    #[command(verbatim_doc_comment)]
    Bridge(Box<BridgeArgs>),
    /// Send one chat message, print the reply, and exit: for scripts, cron jobs and smoke tests.
    ///
    /// Exits 0 with the reply on standard output, or non-zero if no reply arrives in time.
    ///
    ///   mqtt2xmpp ask --jid alice@example.org --password-file pw --to bot@example.org "temp?"
    #[command(verbatim_doc_comment)]
    Ask(AskArgs),
    /// Run the small bundled XMPP server (client-to-server, one domain).
    ///
    /// Accounts are managed with `mqtt2xmpp user`. Without --cert/--key the server creates a
    /// self-signed certificate in the data directory and logs its path and SHA-256 fingerprint;
    /// give that file to clients and to the bridge (--xmpp-ca). SIGHUP (systemctl reload) reads
    /// the certificate and key again, after a renewal, without dropping sessions.
    ///
    ///   mqtt2xmpp server --domain localhost --data-dir /var/lib/mqtt2xmpp
    ///   mqtt2xmpp server --listen 0.0.0.0:5222 --listen-tls 0.0.0.0:5223 --cert ... --key ...
    #[command(verbatim_doc_comment)]
    Server(ServerArgs),
    /// Manage the bundled server's accounts (works while the server runs).
    ///
    ///   mqtt2xmpp user add bot@localhost --password-file bot.pw
    ///   echo 'secret' | mqtt2xmpp user add alice@localhost
    #[command(verbatim_doc_comment)]
    User(UserArgs),
    /// Everything in one process: MQTT broker, XMPP server, simulated sensor and the bot.
    ///
    /// The quickest way to a first chat. Creates bot@localhost and you@localhost with random
    /// passwords in the data directory (the password is printed once), then prints how to ask
    /// from a shell and from profanity. Run it again to reuse the same accounts and data.
    ///
    /// The bot answers every account of this server, alerts and stats included: you@localhost
    /// and any account added while it runs (mqtt2xmpp user add alice@localhost --data-dir DIR).
    ///
    ///   mqtt2xmpp up
    ///   mqtt2xmpp up --data-dir ~/.local/share/mqtt2xmpp --xmpp-port 5322 --xmpp-tls-port 5323
    ///   mqtt2xmpp up --mqtt-host 127.0.0.1 --no-simulator    # use your mosquitto and sensors
    #[command(verbatim_doc_comment)]
    Up(UpArgs),
    /// Publish simulated sensor readings to an MQTT broker: a demo feed or a load source.
    ///
    /// Simple mode (the default) publishes one temperature as a plain number, e.g. 21.37, to
    /// --topic every --interval; it drifts slowly (at most 0.2 per reading) between 15 and 30.
    ///
    /// Building mode (--building ID) publishes a whole smart building, one random sensor at a
    /// time, with random gaps that average --rate messages per second:
    ///
    ///   ID/P_<floor>/<N|S|E|O>/<room>/<TEMP|HUM|LUX|VIBR>
    ///   {"value": 21.4, "unit": "C", "ts": "2026-11-21T08:00:00Z"}
    ///
    /// Floors and rooms count from 1; wings are N, S, E and O (oeste: west). TEMP is °C (18-28),
    /// HUM % (30-70), LUX lx (0-1500), VIBR mm/s (below 1, with occasional spikes); each sensor's
    /// values change smoothly from one reading to the next.
    ///
    /// Messages use QoS 1 unless --qos 0: with --count N the command exits 0 once the broker has
    /// acknowledged N of them (with QoS 0, once N are written to the connection). SIGINT or
    /// SIGTERM stops it cleanly; a summary (messages, rate) is logged at the end.
    ///
    /// Examples:
    ///
    ///   # A reading every 2 s for `mqtt2xmpp bridge` (default topic) on a local broker:
    ///   mqtt2xmpp simulate
    ///
    ///   # A building of 3 floors with 4 rooms per wing (192 sensors), 5 messages/s, retained:
    ///   mqtt2xmpp simulate --building EDIFICIO_1 --floors 3 --rooms-per-wing 4 --rate 5 --retain
    ///   mosquitto_sub -v -t 'EDIFICIO_1/#'
    ///   mqtt2xmpp bridge ... --topic EDIFICIO_1/P_1/N/1/TEMP --json-pointer /value --unit °C
    ///
    ///   # Load: 100 000 messages at up to 20 000/s, as fast as the broker acknowledges them:
    ///   mqtt2xmpp simulate --building LOAD --rate 20000 --count 100000
    #[command(verbatim_doc_comment)]
    Simulate(SimulateArgs),
}

/// `mqtt2xmpp server`.
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// The domain served: accounts are user@DOMAIN.
    #[arg(long, env = "MQTT2XMPP_DOMAIN", default_value = "localhost")]
    pub domain: String,

    /// Address and port to listen on for client connections.
    #[arg(long, env = "MQTT2XMPP_LISTEN", default_value = "127.0.0.1:5222")]
    pub listen: std::net::SocketAddr,

    /// Also accept clients that start with TLS ("direct TLS", XEP-0368; port 5223 by custom),
    /// e.g. 0.0.0.0:5223: for clients set to direct TLS or SSL, and networks that let only TLS
    /// through. Same certificate, accounts and limits as --listen; announce it with an
    /// _xmpps-client._tcp SRV record. Off unless given.
    #[arg(long, env = "MQTT2XMPP_LISTEN_TLS", value_name = "ADDR")]
    pub listen_tls: Option<std::net::SocketAddr>,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub data: DataDirArg,

    /// Certificate chain (PEM) for the domain; with --key, used instead of a self-signed one.
    /// Both files are read again on SIGHUP (systemctl reload): new connections get the renewed
    /// certificate, sessions stay; if the new pair cannot be used, the error is logged and the
    /// previous certificate stays in use.
    #[arg(long, env = "MQTT2XMPP_CERT", value_name = "PEM", requires = "key")]
    pub cert: Option<PathBuf>,

    /// Private key (PEM) for --cert.
    #[arg(long, env = "MQTT2XMPP_KEY", value_name = "PEM", requires = "cert")]
    pub key: Option<PathBuf>,

    /// Largest stanza accepted after login, in bytes.
    #[arg(long, env = "MQTT2XMPP_MAX_STANZA_BYTES", default_value_t = 256 * 1024)]
    pub max_stanza_bytes: usize,

    /// Largest element accepted before login, in bytes.
    #[arg(long, env = "MQTT2XMPP_MAX_PREAUTH_BYTES", default_value_t = 10_000)]
    pub max_preauth_bytes: usize,

    /// Most simultaneous client connections; more wait to be accepted.
    #[arg(long, env = "MQTT2XMPP_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,

    /// Most connections from one IP address that have not logged in yet; more are refused at
    /// once. Raise it for many clients behind one NAT address logging in at the same moment.
    #[arg(
        long,
        env = "MQTT2XMPP_MAX_UNAUTHENTICATED_PER_ADDRESS",
        default_value_t = 128,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub max_unauthenticated_per_address: u32,

    /// Sustained bytes per second one connection may send (reading pauses above it).
    #[arg(long, env = "MQTT2XMPP_BYTES_PER_SECOND", default_value_t = 64 * 1024)]
    pub bytes_per_second: u32,

    /// Bytes one connection may send in a burst above the sustained rate.
    #[arg(long, env = "MQTT2XMPP_BURST_BYTES", default_value_t = 512 * 1024)]
    pub burst_bytes: u32,

    /// An account (`bot` or `bot@DOMAIN`) whose sessions have no byte rate once logged in, such
    /// as the bridge's bot, which answers many users, or an external component's NAME
    /// (repeatable; comma-separated in the environment variable).
    #[arg(
        long,
        env = "MQTT2XMPP_UNTHROTTLED",
        value_name = "USER",
        value_delimiter = ','
    )]
    pub unthrottled: Vec<String>,

    /// Time a connection has to log in and bind a resource.
    #[arg(long, env = "MQTT2XMPP_AUTH_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub auth_timeout: Duration,

    /// A client silent this long is pinged; silent twice as long, disconnected.
    #[arg(long, env = "MQTT2XMPP_IDLE_PING", default_value = "5m", value_parser = parse_duration)]
    pub idle_ping: Duration,

    /// How long a phone or laptop whose connection dropped without a goodbye keeps its session
    /// (XEP-0198 stream management with resumption): it reconnects within this time and gets
    /// every message it missed, exactly once, while its contacts still see it online. After
    /// that its unacknowledged messages go to offline storage and arrive at its next login.
    /// `0s` turns resumption off.
    #[arg(long, env = "MQTT2XMPP_RESUME_TIMEOUT", default_value = "10m", value_parser = parse_duration)]
    pub resume_timeout: Duration,

    /// Most stanzas a client with stream management may leave unacknowledged: beyond it the
    /// server waits for the client's acks (closing a client that acknowledges nothing within
    /// 30 s, or --idle-ping if shorter), and a dropped session keeps at most this many for its
    /// return. A session closed for it loses nothing: its unacknowledged messages go to offline
    /// storage.
    #[arg(long, env = "MQTT2XMPP_MAX_UNACKED", default_value_t = 500,
        value_parser = clap::value_parser!(u32).range(1..))]
    pub max_unacked: u32,

    /// Largest vCard (the profile with name, avatar photo, e-mail … that clients show) one
    /// account may store, in bytes of its XML; a larger one is refused (`not-acceptable`) and
    /// the stored one stays. The photo is in it in base64, a third larger than the image: the
    /// default 128 KiB holds a photo of up to about 95 KiB, plenty for an avatar (XEP-0153
    /// asks for 64x64 pixels in under 8 KiB; phones send larger ones). It cannot usefully
    /// exceed --max-stanza-bytes, since the vCard arrives in one stanza.
    #[arg(long, env = "MQTT2XMPP_MAX_VCARD_BYTES", default_value_t = 128 * 1024,
        value_parser = clap::value_parser!(u32).range(1..))]
    pub max_vcard_bytes: u32,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub pep: PepArgs,
    /// Most JIDs one account may block (XEP-0191 block list, as profanity's /blocked and
    /// Conversations' "block" use it). Every list is kept in memory for routing, so this
    /// bounds what one account can make the server hold; a block past it is refused with
    /// policy-violation and the user can unblock to make room.
    #[arg(long, env = "MQTT2XMPP_MAX_BLOCKLIST", default_value_t = 1000,
        value_parser = clap::value_parser!(u32).range(1..))]
    pub max_blocklist: u32,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub archive: ArchiveArgs,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub muc: MucArgs,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub components: ComponentArgs,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub upload: UploadArgs,

    /// An address where people reach who runs this server (XEP-0157), shown by clients that
    /// ask the server who runs it: KIND is admin, abuse, support, security, feedback, sales
    /// or status, URI a mailto:, xmpp: or https: address, e.g.
    /// `--contact-address admin=mailto:ops@example.org`. Repeatable; comma-separated in the
    /// environment variable.
    #[arg(long = "contact-address", env = "MQTT2XMPP_CONTACT_ADDRESSES",
        value_name = "KIND=URI", value_delimiter = ',', value_parser = parse_contact)]
    pub contact_addresses: Vec<(String, String)>,
}

/// HTTP File Upload (XEP-0363) of `mqtt2xmpp server`: people share photos and files, and the
/// bot its charts, by uploading them here and sending the link.
#[derive(Debug, Args)]
#[command(next_help_heading = "HTTP File Upload (XEP-0363)")]
pub struct UploadArgs {
    /// Serve file uploads over HTTPS on this address (same certificate as XMPP), e.g.
    /// 0.0.0.0:5443, and offer the upload service upload.DOMAIN. The links handed out are
    /// https://DOMAIN:PORT/upload/…, unless --http-external-url says otherwise. Off unless
    /// given.
    #[arg(long, env = "MQTT2XMPP_HTTP_LISTEN", value_name = "ADDR")]
    pub http_listen: Option<std::net::SocketAddr>,

    /// The start of the upload links when clients reach the HTTPS listener by another name or
    /// port than https://DOMAIN:PORT (a reverse proxy, a port forward), e.g.
    /// https://files.example.org.
    #[arg(long, env = "MQTT2XMPP_HTTP_EXTERNAL_URL", value_name = "URL", value_parser = parse_external_url)]
    pub http_external_url: Option<String>,

    /// Largest file one upload may bring, in bytes.
    #[arg(long, env = "MQTT2XMPP_UPLOAD_MAX_SIZE", value_name = "BYTES",
        default_value_t = 10 * 1024 * 1024, value_parser = clap::value_parser!(u64).range(1..))]
    pub upload_max_size: u64,

    /// Most bytes of uploaded files one account keeps at once; past it, uploads are refused
    /// until older files expire.
    #[arg(long, env = "MQTT2XMPP_UPLOAD_QUOTA", value_name = "BYTES",
        default_value_t = 100 * 1024 * 1024, value_parser = clap::value_parser!(u64).range(1..))]
    pub upload_quota: u64,

    /// Uploaded files are deleted this many days after their upload.
    #[arg(long, env = "MQTT2XMPP_UPLOAD_EXPIRE_DAYS", value_name = "DAYS", default_value_t = 7,
        value_parser = clap::value_parser!(u32).range(1..))]
    pub upload_expire_days: u32,

    /// Files' lifetime in seconds instead of days (for tests).
    #[arg(long, hide = true)]
    pub upload_expire_seconds: Option<u64>,

    /// Most HTTPS connections served at once; more wait to be accepted.
    #[arg(long, env = "MQTT2XMPP_HTTP_MAX_CONNECTIONS", value_name = "COUNT",
        default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    pub http_max_connections: u32,
}

/// The kinds of contact address of XEP-0157 §4.
const CONTACT_KINDS: [&str; 7] = [
    "admin", "abuse", "support", "security", "feedback", "sales", "status",
];

/// `admin=mailto:ops@example.org`.
fn parse_contact(text: &str) -> Result<(String, String), String> {
    let (kind, uri) = text
        .split_once('=')
        .ok_or_else(|| "expected KIND=URI, e.g. admin=mailto:ops@example.org".to_string())?;
    let kind = kind.trim().to_ascii_lowercase();
    if !CONTACT_KINDS.contains(&kind.as_str()) {
        return Err(format!(
            "unknown kind {kind:?}: one of {}",
            CONTACT_KINDS.join(", ")
        ));
    }
    let uri = uri.trim();
    if !uri.contains(':') || uri.chars().any(char::is_whitespace) {
        return Err(format!(
            "{uri:?} is not a URI: write mailto:…, xmpp:… or https://…"
        ));
    }
    Ok((kind, uri.to_string()))
}

/// An `https://HOST[:PORT][/PATH]` the upload links start with.
fn parse_external_url(text: &str) -> Result<String, String> {
    let rest = text
        .strip_prefix("https://")
        .ok_or_else(|| format!("{text:?} must start with https://"))?;
    if rest.is_empty()
        || rest.starts_with('/')
        || rest
            .chars()
            .any(|c| c.is_whitespace() || c == '?' || c == '#')
    {
        return Err(format!("{text:?} is not an https:// URL with a host"));
    }
    Ok(text.trim_end_matches('/').to_string())
}

/// What one account may keep in PEP (XEP-0163): the nickname, avatar, bookmarks and OMEMO keys
/// clients publish at the user's own address.
#[derive(Debug, Args)]
#[command(next_help_heading = "Personal eventing, PEP (XEP-0163)")]
pub struct PepArgs {
    /// Most PEP nodes per account. A client uses about one per feature (nickname, avatar data
    /// and metadata, bookmarks, OMEMO device list and one bundle per device …); a client that
    /// would create more gets `policy-violation`.
    #[arg(long, env = "MQTT2XMPP_PEP_MAX_NODES", default_value_t = 100,
        value_parser = clap::value_parser!(u32).range(1..))]
    pub pep_max_nodes: u32,

    /// Most items one PEP node keeps, and what a client asking for `max` gets (bookmarks keep
    /// one item per room); the oldest items go first.
    #[arg(long, env = "MQTT2XMPP_PEP_MAX_ITEMS", default_value_t = 1000,
        value_parser = clap::value_parser!(u32).range(1..))]
    pub pep_max_items: u32,

    /// Largest PEP item, in bytes of XML. An avatar is published base64-encoded (4/3 of the
    /// image), so 128 KiB takes a 96 KiB picture; raise it together with --max-stanza-bytes.
    #[arg(long, env = "MQTT2XMPP_PEP_MAX_ITEM_BYTES", default_value_t = 128 * 1024,
        value_parser = clap::value_parser!(u32).range(1..))]
    pub pep_max_item_bytes: u32,

    /// Most bytes of PEP items one account keeps in all its nodes together.
    #[arg(long, env = "MQTT2XMPP_PEP_MAX_ACCOUNT_BYTES", default_value_t = 16 * 1024 * 1024,
        value_parser = clap::value_parser!(u64).range(1..))]
    pub pep_max_account_bytes: u64,
}

/// The message archive (XEP-0313) of `mqtt2xmpp server`.
#[derive(Debug, Args)]
#[command(next_help_heading = "Message archive (XEP-0313)")]
pub struct ArchiveArgs {
    /// Keep no archive: one-to-one messages and rooms' messages are no longer archived (what
    /// is stored stays until it expires), and clients are told there is none. With the archive
    /// on (the default), every account keeps its chats on the server, so a phone and a laptop
    /// show the same history, the bot's alerts included, and every room keeps what was said in
    /// it.
    #[arg(long, env = "MQTT2XMPP_NO_ARCHIVE")]
    pub no_archive: bool,

    /// Archived messages older than this are deleted (`0s`: kept until --archive-max-messages
    /// pushes them out), e.g. 7d, 30d, 1y.
    #[arg(long, env = "MQTT2XMPP_ARCHIVE_MAX_AGE", default_value = "30days",
        value_name = "AGE", value_parser = parse_duration)]
    pub archive_max_age: Duration,

    /// Most archived messages kept per account; beyond it the oldest go first. A short chat
    /// message takes about 300 bytes on disk, so the default is a few MB per account.
    #[arg(long, env = "MQTT2XMPP_ARCHIVE_MAX_MESSAGES", default_value_t = 10_000,
        value_name = "COUNT", value_parser = clap::value_parser!(u32).range(1..))]
    pub archive_max_messages: u32,
}

/// The rooms (XEP-0045 multi-user chat) of `mqtt2xmpp server`.
#[derive(Debug, Args)]
#[command(next_help_heading = "Rooms, multi-user chat (XEP-0045)")]
pub struct MucArgs {
    /// Where the rooms live: clients join `ROOM@DOMAIN` (profanity: `/join lab@DOMAIN`). The
    /// default is `conference.` followed by --domain, which clients look for by themselves
    /// (they find it in the server's service list). It must differ from --domain, and it needs
    /// no DNS record: clients reach it through this server.
    #[arg(long, env = "MQTT2XMPP_MUC_DOMAIN", value_name = "DOMAIN", value_parser = parse_muc_domain)]
    pub muc_domain: Option<String>,

    /// Serve no rooms: the room service is not listed and stanzas to it get an error. Rooms
    /// saved as persistent stay in the database for when it is turned on again.
    #[arg(long, env = "MQTT2XMPP_NO_MUC", conflicts_with = "muc_domain")]
    pub no_muc: bool,

    /// Lock a new room until its creator configures it (XEP-0045 §10.1): others get
    /// `item-not-found` until the creator submits the configuration form or accepts the
    /// defaults, as Prosody does by default. Off by default: a new room is an instant room that
    /// everyone can join at once, which is what bots and simple clients expect, since most of
    /// them never configure the rooms they create. A lock lasts at most 5 minutes.
    #[arg(long, env = "MQTT2XMPP_MUC_LOCK_NEW_ROOMS")]
    pub muc_lock_new_rooms: bool,

    /// Most rooms one account may have created that still exist (persistent ones included);
    /// one more is refused, so that one account cannot fill the service.
    #[arg(long, env = "MQTT2XMPP_MUC_MAX_ROOMS_PER_USER", default_value_t = 100,
        value_name = "COUNT", value_parser = clap::value_parser!(u32).range(1..))]
    pub muc_max_rooms_per_user: u32,

    /// Most occupants of one room; owners may set a lower limit for their room.
    #[arg(long, env = "MQTT2XMPP_MUC_MAX_OCCUPANTS", default_value_t = 200,
        value_name = "COUNT", value_parser = clap::value_parser!(u32).range(1..))]
    pub muc_max_occupants: u32,

    /// Most messages of discussion history a room keeps (in memory) and replays to a joiner;
    /// owners may set fewer for their room. `0` keeps none.
    #[arg(long, env = "MQTT2XMPP_MUC_MAX_HISTORY", default_value_t = 20,
        value_name = "COUNT", value_parser = clap::value_parser!(u32).range(0..=10_000))]
    pub muc_max_history: u32,

    /// Messages an occupant may send to one room a minute (with presence updates, nick changes
    /// and invitations); past it, and past --muc-message-burst at once, the sender gets
    /// `resource-constraint` and nothing is delivered. --unthrottled accounts (the bot, posting
    /// alerts) have no room limit.
    #[arg(long, env = "MQTT2XMPP_MUC_MESSAGES_PER_MINUTE", default_value_t = 120,
        value_name = "COUNT", value_parser = clap::value_parser!(u32).range(1..))]
    pub muc_messages_per_minute: u32,

    /// Messages an occupant may send to one room at once before the per-minute rate applies.
    #[arg(long, env = "MQTT2XMPP_MUC_MESSAGE_BURST", default_value_t = 40,
        value_name = "COUNT", value_parser = clap::value_parser!(u32).range(1..))]
    pub muc_message_burst: u32,
}

/// A room service's domain: a domain name without a user or resource part.
fn parse_muc_domain(text: &str) -> Result<String, String> {
    match tokio_xmpp::jid::BareJid::new(text.trim()) {
        Ok(jid) if jid.node().is_none() => Ok(jid.to_string()),
        _ => Err(format!(
            "{text:?} is not a domain (e.g. conference.example.org, without '@' or '/')"
        )),
    }
}

/// External components (XEP-0114) of `mqtt2xmpp server`.
#[derive(Debug, Args)]
#[command(next_help_heading = "External components (XEP-0114)")]
pub struct ComponentArgs {
    /// Accept the external component NAME, a gateway or bot that runs as a program of its own
    /// and serves the domain NAME (e.g. gateway.example.org): every address @NAME is routed
    /// to it. It proves the secret in SECRET_FILE (one line; the secret never goes on the
    /// command line). Repeatable, one per component; comma-separated in the environment
    /// variable. Opens the --listen-component listener.
    ///
    ///   head -c 24 /dev/urandom | base64 > gateway.secret
    ///   mqtt2xmpp server --component gateway.example.org=gateway.secret
    ///   # the component: host 127.0.0.1, port 5347, JID gateway.example.org, that secret
    #[arg(
        long = "component",
        env = "MQTT2XMPP_COMPONENTS",
        value_name = "NAME=SECRET_FILE",
        value_delimiter = ',',
        value_parser = parse_component,
        verbatim_doc_comment
    )]
    pub components: Vec<ComponentArg>,

    /// Address and port where external components connect (only with --component). Components
    /// speak plain TCP: keep it on loopback or a private network.
    #[arg(
        long,
        env = "MQTT2XMPP_LISTEN_COMPONENT",
        value_name = "ADDR",
        default_value = "127.0.0.1:5347"
    )]
    pub listen_component: std::net::SocketAddr,
}

/// One `--component NAME=SECRET_FILE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentArg {
    /// The component's domain, as written.
    pub name: String,
    /// The file holding its secret.
    pub secret_file: PathBuf,
}

/// `gateway.example.org=/etc/mqtt2xmpp/gateway.secret`.
fn parse_component(text: &str) -> Result<ComponentArg, String> {
    match text.split_once('=') {
        Some((name, file)) if !name.trim().is_empty() && !file.is_empty() => Ok(ComponentArg {
            name: name.trim().to_string(),
            secret_file: PathBuf::from(file),
        }),
        _ => Err(
            "expected NAME=SECRET_FILE, e.g. gateway.example.org=gateway.secret (the secret \
             itself goes in the file, never on the command line)"
                .into(),
        ),
    }
}

/// Where the server keeps its database and certificate.
#[derive(Debug, Args)]
pub struct DataDirArg {
    /// Directory for the account database and the self-signed certificate.
    // Global: accepted after the verb too (`user add alice@localhost --data-dir data`).
    #[arg(
        long,
        env = "MQTT2XMPP_DATA_DIR",
        default_value = "mqtt2xmpp-data",
        global = true
    )]
    pub data_dir: PathBuf,
}

/// `mqtt2xmpp user`.
#[derive(Debug, Args)]
pub struct UserArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub data: DataDirArg,

    /// What to do.
    #[command(subcommand)]
    pub action: UserAction,
}

/// Account administration.
#[derive(Debug, Subcommand)]
pub enum UserAction {
    /// Create an account. The password comes from --password-file or standard input.
    Add {
        /// The account, e.g. alice@localhost.
        jid: String,
        /// File holding the password (one line); default: read a line from standard input.
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
    },
    /// Delete an account with its roster, offline messages and private data.
    Del {
        /// The account.
        jid: String,
    },
    /// List the accounts.
    List,
    /// Change an account's password (from --password-file or standard input).
    Passwd {
        /// The account.
        jid: String,
        /// File holding the new password; default: read a line from standard input.
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
    },
}

/// `mqtt2xmpp bridge`.
#[derive(Debug, Args)]
pub struct BridgeArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub mqtt: MqttArgs,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub sensor: SensorArgs,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub bot: BotArgs,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub xmpp: XmppArgs,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub rooms: RoomArgs,
}

/// The group chat rooms the bot sits in (XEP-0045).
#[derive(Debug, Args)]
#[command(next_help_heading = "Group chat rooms")]
pub struct RoomArgs {
    /// Join this multi-user chat room, e.g. lab@conference.example.org, or
    /// lab@conference.example.org/sensei to pick the bot's nick [default nick: the local part of
    /// --jid]. Repeatable, or comma-separated; [[room]] tables in --sensors-file add more. In the
    /// room the bot answers messages addressed to it ("sensei: temperature?", "@sensei list") and
    /// private messages, like a one-to-one chat; "alert ..." said there sets an alert whose
    /// messages go to the room. It joins again by itself after a reconnection, a kick or a
    /// silent removal. It also joins rooms it is invited to by a contact allowed everything
    /// (--allow), and keeps them in --state-db.
    #[arg(
        long,
        env = "MQTT2XMPP_ROOM",
        value_name = "ROOM@SERVICE[/NICK]",
        value_delimiter = ','
    )]
    pub room: Vec<String>,

    /// Let every occupant of this room read values, even where the room hides their real JIDs
    /// (otherwise --allow decides by the real JID the room shows, and anonymous occupants of an
    /// allow-listed bot are refused). Alerts and stats still need --allow. Anyone may invite the
    /// bot into such a room. Repeatable, or comma-separated.
    #[arg(
        long,
        env = "MQTT2XMPP_ROOM_ALLOW",
        value_name = "ROOM@SERVICE",
        value_delimiter = ','
    )]
    pub room_allow: Vec<String>,

    /// Say in this room (one of --room's, by ROOM@SERVICE) when a sensor's topic has sent
    /// nothing for --stale-after, and when it is back. Off by default. Repeatable, or
    /// comma-separated. In the sensors file: announce_stale = true in a [[room]] table.
    #[arg(
        long,
        env = "MQTT2XMPP_ROOM_ANNOUNCE_STALE",
        value_name = "ROOM@SERVICE",
        value_delimiter = ','
    )]
    pub room_announce_stale: Vec<String>,

    /// How long a room may stay quiet before the bot checks that it is still in it (XEP-0410
    /// self-ping).
    #[arg(long, env = "MQTT2XMPP_ROOM_PING_INTERVAL", default_value = "1m",
          value_parser = parse_duration, hide = true)]
    pub room_ping_interval: Duration,
}

/// The per-contact reply rate limit (bridge and up).
#[derive(Debug, Args)]
pub struct RateArgs {
    /// Replies per minute to one contact, on average; over it (after a burst of
    /// --reply-burst) the contact is told once to slow down, then ignored until it does.
    #[arg(long, env = "MQTT2XMPP_REPLIES_PER_MINUTE", default_value_t = 30,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub replies_per_minute: u32,

    /// Replies to one contact in a quick row before --replies-per-minute applies.
    #[arg(long, env = "MQTT2XMPP_REPLY_BURST", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub reply_burst: u32,
}

/// Who may use the bot, how much it remembers, how it alerts.
#[derive(Debug, Args)]
#[command(next_help_heading = "Access, history and alerts")]
pub struct BotArgs {
    /// Allow this contact (a bare JID) to use the bot, alerts and stats included. Repeatable, or
    /// comma-separated. With no --allow/--allow-domain anyone may read values, but nobody may set
    /// alerts or ask for stats; with any, everyone else gets one polite refusal an hour.
    #[arg(
        long,
        env = "MQTT2XMPP_ALLOW",
        value_name = "JID",
        value_delimiter = ','
    )]
    pub allow: Vec<String>,

    /// Allow every account of this domain, as --allow does for one contact. Repeatable, or
    /// comma-separated.
    #[arg(
        long,
        env = "MQTT2XMPP_ALLOW_DOMAIN",
        value_name = "DOMAIN",
        value_delimiter = ','
    )]
    pub allow_domain: Vec<String>,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub rate: RateArgs,

    /// Most distinct MQTT topics tracked. Readings on further new topics are dropped (and
    /// logged once a minute); topics already tracked keep updating.
    #[arg(long, env = "MQTT2XMPP_MAX_TOPICS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub max_topics: u64,

    /// Readings kept per topic for stats (24 bytes each: the defaults need at most 24 MB).
    #[arg(long, env = "MQTT2XMPP_HISTORY", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub history: u64,

    /// Keep the history and the alerts in this SQLite file, so they survive a restart
    /// [default: in memory only].
    #[arg(long, env = "MQTT2XMPP_STATE_DB", value_name = "FILE")]
    pub state_db: Option<PathBuf>,

    /// Least time between two messages of one alert about one topic.
    #[arg(long, env = "MQTT2XMPP_ALERT_INTERVAL", default_value = "1m", value_parser = parse_duration)]
    pub alert_interval: Duration,

    /// Least time between two updates of the presence status, which shows the default sensor's
    /// value.
    #[arg(long, env = "MQTT2XMPP_PRESENCE_INTERVAL", default_value = "1m", value_parser = parse_duration)]
    pub presence_interval: Duration,

    /// How long an ad-hoc command session (XEP-0050) waits for its next request before it
    /// expires (tests set 0s to see expiry without waiting).
    #[arg(long, env = "MQTT2XMPP_COMMAND_SESSION_LIFETIME", default_value = "10m",
          value_parser = parse_duration, hide = true)]
    pub command_session_lifetime: Duration,
    /// Answer stats with text alone: no chart, even when the XMPP server has an upload service
    /// (XEP-0363).
    #[arg(long, env = "MQTT2XMPP_NO_CHARTS")]
    pub no_charts: bool,
}

/// Where the readings come from.
#[derive(Debug, Args)]
#[command(next_help_heading = "MQTT broker")]
pub struct MqttArgs {
    /// Broker host name or address.
    #[arg(long, env = "MQTT2XMPP_MQTT_HOST", default_value = "127.0.0.1")]
    pub mqtt_host: String,

    /// Broker port [default: 1883, or 8883 with --mqtt-tls].
    #[arg(long, env = "MQTT2XMPP_MQTT_PORT")]
    pub mqtt_port: Option<u16>,

    /// User name for brokers that require a login.
    #[arg(long, env = "MQTT2XMPP_MQTT_USERNAME")]
    pub mqtt_username: Option<String>,

    /// File holding the MQTT password (one line). The environment variable
    /// MQTT2XMPP_MQTT_PASSWORD works too.
    #[arg(long, env = "MQTT2XMPP_MQTT_PASSWORD_FILE", value_name = "FILE")]
    pub mqtt_password_file: Option<PathBuf>,

    /// MQTT client identifier [default: unique per process]. Two clients with the same
    /// identifier keep disconnecting each other.
    #[arg(long, env = "MQTT2XMPP_MQTT_CLIENT_ID")]
    pub mqtt_client_id: Option<String>,

    /// Connect to the broker over TLS.
    #[arg(long, env = "MQTT2XMPP_MQTT_TLS")]
    pub mqtt_tls: bool,

    /// Trust this PEM certificate or CA for the broker, in addition to the system's (implies
    /// --mqtt-tls).
    #[arg(long, env = "MQTT2XMPP_MQTT_CA", value_name = "FILE")]
    pub mqtt_ca: Option<PathBuf>,
}

/// What the bot reads and how it shows it: its sensors.
///
/// Sensors are kept in this order: `--sensor` flags, then the sensors of `--sensors-file`, then
/// `--topic` flags; the first one is the default, which answers any message that is not a
/// command. `config::sensors` turns them into the bot's sensors.
#[derive(Debug, Args)]
#[command(next_help_heading = "Sensor")]
pub struct SensorArgs {
    /// A named sensor: name=NAME,topic=TOPIC[,json-pointer=POINTER][,unit=UNIT][,precision=N],
    /// e.g. --sensor name=temp,topic=sensors/temperature,unit=°C,precision=1. Repeat for more
    /// sensors; they come first, so the first --sensor is the default sensor. Fields left out
    /// take --json-pointer, --unit and --precision. A name is 1 to 32 letters, digits, _ - or .
    /// (temp, baño, vib_oeste). For a topic containing ',' use --sensors-file.
    #[arg(long = "sensor", env = "MQTT2XMPP_SENSOR", value_name = "SPEC")]
    pub sensors: Vec<String>,

    /// TOML file of [[sensor]] tables (name, topic, and optionally json_pointer, unit,
    /// precision), e.g. deploy/sensors.toml.example. Its sensors come after those of --sensor
    /// and before those of --topic.
    #[arg(long, env = "MQTT2XMPP_SENSORS_FILE", value_name = "FILE")]
    pub sensors_file: Option<PathBuf>,

    /// A sensor named by its MQTT topic, which may use the wildcards + (one level) and # (all
    /// levels below), e.g. --topic 'EDIFICIO_1/+/+/+/TEMP'. Repeat for more sensors; they come
    /// last. With no --sensor, --sensors-file or --topic at all, the bot reads one sensor:
    /// sensors/temperature.
    #[arg(long, env = "MQTT2XMPP_TOPIC", value_name = "TOPIC")]
    pub topic: Vec<String>,

    /// Take the value from a JSON payload at this RFC 6901 pointer, e.g. /temperature for
    /// {"temperature": 21.5}. Without it the payload must be a plain number. For every sensor
    /// that does not set its own.
    #[arg(long, env = "MQTT2XMPP_JSON_POINTER", value_name = "POINTER")]
    pub json_pointer: Option<String>,

    /// Unit shown after the value, e.g. °C, for every sensor that does not set its own.
    #[arg(
        long,
        env = "MQTT2XMPP_UNIT",
        default_value = "",
        hide_default_value = true
    )]
    pub unit: String,

    /// Decimals shown, for every sensor that does not set its own [default: the value as
    /// published].
    #[arg(long, env = "MQTT2XMPP_PRECISION", value_parser = clap::value_parser!(u8).range(0..=9))]
    pub precision: Option<u8>,

    /// A reading older than this is marked stale in replies, and a topic an alert covers that
    /// stays silent this long is reported to the alert's owner (e.g. 90s, 10m, 2h).
    #[arg(long, env = "MQTT2XMPP_STALE_AFTER", default_value = "10m", value_parser = parse_duration)]
    pub stale_after: Duration,
}

/// How the bot logs in to XMPP.
#[derive(Debug, Args)]
#[command(next_help_heading = "XMPP account")]
pub struct XmppArgs {
    /// The account to log in with, e.g. bot@example.org (add /resource to choose one).
    #[arg(long, env = "MQTT2XMPP_JID")]
    pub jid: String,

    /// File holding the account's password (one line). The environment variable
    /// MQTT2XMPP_PASSWORD works too; there is deliberately no password flag.
    #[arg(long, env = "MQTT2XMPP_PASSWORD_FILE", value_name = "FILE")]
    pub password_file: Option<PathBuf>,

    /// Connect to this HOST:PORT instead of looking up the JID's domain in DNS.
    #[arg(long, env = "MQTT2XMPP_XMPP_SERVER", value_name = "HOST:PORT")]
    pub xmpp_server: Option<String>,

    /// Trust this PEM certificate or CA for the XMPP server, in addition to the system's, e.g.
    /// the self-signed certificate of a private server.
    #[arg(long, env = "MQTT2XMPP_XMPP_CA", value_name = "FILE")]
    pub xmpp_ca: Option<PathBuf>,
}

/// `mqtt2xmpp ask`.
#[derive(Debug, Args)]
pub struct AskArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub xmpp: XmppArgs,

    /// Whom to ask, e.g. bot@example.org.
    #[arg(long, env = "MQTT2XMPP_TO")]
    pub to: String,

    /// Give up if the login or a reply takes longer than this.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// Ask this many times in a row and print latency statistics (median, p90, max) to standard
    /// error: a quick measurement of the round trip.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub count: u32,

    /// The message to send.
    #[arg(default_value = "?")]
    pub message: String,
}

/// `mqtt2xmpp up`.
#[derive(Debug, Args)]
pub struct UpArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub data: DataDirArg,

    /// Port of the XMPP server on 127.0.0.1 (STARTTLS, what clients use by default).
    #[arg(long, env = "MQTT2XMPP_XMPP_PORT", default_value_t = 5222)]
    pub xmpp_port: u16,

    /// Port of the XMPP server's direct TLS listener on 127.0.0.1 (XEP-0368: TLS from the first
    /// byte, for clients set to direct TLS or SSL).
    #[arg(long, env = "MQTT2XMPP_XMPP_TLS_PORT", default_value_t = 5223)]
    pub xmpp_tls_port: u16,

    /// Port of the XMPP server's HTTPS file upload listener on 127.0.0.1 (XEP-0363: photos and
    /// files sent in chats, and the bot's charts).
    #[arg(long, env = "MQTT2XMPP_HTTP_PORT", default_value_t = 5443)]
    pub http_port: u16,

    /// Port of the MQTT broker (embedded on 127.0.0.1, or on --mqtt-host).
    #[arg(long, env = "MQTT2XMPP_MQTT_PORT", default_value_t = 1883)]
    pub mqtt_port: u16,

    /// How long a phone or laptop whose connection dropped without a goodbye keeps its session
    /// (XEP-0198 stream management with resumption): it reconnects within this time and gets
    /// every message it missed, exactly once, while its contacts still see it online. After
    /// that its unacknowledged messages go to offline storage and arrive at its next login.
    /// `0s` turns resumption off.
    #[arg(long, env = "MQTT2XMPP_RESUME_TIMEOUT", default_value = "10m", value_parser = parse_duration)]
    pub resume_timeout: Duration,

    /// Use this MQTT broker instead of starting the embedded one.
    #[arg(long, env = "MQTT2XMPP_MQTT_HOST")]
    pub mqtt_host: Option<String>,

    /// The topic the bot answers about (and the simulated sensor publishes to).
    #[arg(long, env = "MQTT2XMPP_TOPIC", default_value = "sensors/temperature")]
    pub topic: String,

    /// Name of your account: NAME@localhost.
    #[arg(long, env = "MQTT2XMPP_USER", default_value = "you")]
    pub user: String,

    /// Do not start the simulated sensor (your own sensors publish to the broker).
    #[arg(long)]
    pub no_simulator: bool,

    /// Every account of up's server (NAME@localhost, including those added with `mqtt2xmpp
    /// user add`) may use the bot, alerts and stats included; also allow this contact (a bare
    /// JID). Repeatable, or comma-separated.
    #[arg(
        long,
        env = "MQTT2XMPP_ALLOW",
        value_name = "JID",
        value_delimiter = ','
    )]
    pub allow: Vec<String>,

    /// Also allow every account of this domain, as --allow does for one contact. Repeatable, or
    /// comma-separated.
    #[arg(
        long,
        env = "MQTT2XMPP_ALLOW_DOMAIN",
        value_name = "DOMAIN",
        value_delimiter = ','
    )]
    pub allow_domain: Vec<String>,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub rate: RateArgs,

    /// Answer about the sensors in this TOML file instead of --topic alone, e.g.
    /// deploy/sensors.toml.example with `mqtt2xmpp simulate --building EDIFICIO_1` publishing.
    #[arg(long, env = "MQTT2XMPP_SENSORS_FILE", value_name = "FILE")]
    pub sensors_file: Option<PathBuf>,

    /// The group chat room the bot creates and sits in, on the bundled server's room service;
    /// join it from your client ("/join sensors@conference.localhost" in profanity) and
    /// address the bot there ("bot: temperature?").
    #[arg(
        long,
        env = "MQTT2XMPP_UP_ROOM",
        value_name = "ROOM@SERVICE[/NICK]",
        default_value = "sensors@conference.localhost",
        conflicts_with = "no_room"
    )]
    pub room: String,

    /// Do not create a room: the bot answers one-to-one chats only.
    #[arg(long)]
    pub no_room: bool,
}

/// `mqtt2xmpp simulate`: simple mode unless `--building` is given.
#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// The topic to publish to.
    #[arg(
        long,
        env = "MQTT2XMPP_TOPIC",
        default_value = "sensors/temperature",
        value_parser = parse_publish_topic,
        conflicts_with = "building",
        help_heading = "Simple mode (default)"
    )]
    pub topic: String,

    /// Time between two readings (e.g. 500ms, 2s, 1m).
    #[arg(
        long,
        env = "MQTT2XMPP_INTERVAL",
        default_value = "2s",
        value_parser = parse_interval,
        conflicts_with = "building",
        help_heading = "Simple mode (default)"
    )]
    pub interval: Duration,

    /// The building, first level of every topic (e.g. EDIFICIO_1).
    #[arg(
        long,
        env = "MQTT2XMPP_BUILDING",
        value_name = "ID",
        value_parser = parse_building,
        help_heading = "Building mode"
    )]
    pub building: Option<String>,

    /// Number of floors, P_1 to P_<floors>.
    #[arg(
        long,
        env = "MQTT2XMPP_FLOORS",
        default_value_t = 3,
        value_parser = clap::value_parser!(u16).range(1..=200),
        requires = "building",
        help_heading = "Building mode"
    )]
    pub floors: u16,

    /// Rooms in each wing (N, S, E, O) of each floor.
    #[arg(
        long,
        env = "MQTT2XMPP_ROOMS_PER_WING",
        default_value_t = 4,
        value_parser = clap::value_parser!(u16).range(1..=999),
        requires = "building",
        help_heading = "Building mode"
    )]
    pub rooms_per_wing: u16,

    /// Average messages per second over the whole building (0.001 to 100000;
    /// fractions allowed, e.g. 0.2 for one every 5 s).
    #[arg(
        long,
        env = "MQTT2XMPP_RATE",
        default_value = "1",
        value_parser = parse_rate,
        requires = "building",
        help_heading = "Building mode"
    )]
    pub rate: f64,

    /// Stop after this many messages have reached the broker [default: run until stopped].
    #[arg(
        long,
        env = "MQTT2XMPP_COUNT",
        value_parser = clap::value_parser!(u64).range(1..),
        help_heading = "Publishing"
    )]
    pub count: Option<u64>,

    /// Publish as retained messages: the broker keeps each topic's last reading for new
    /// subscribers (and for the bridge's first answer after a restart).
    #[arg(long, env = "MQTT2XMPP_RETAIN", help_heading = "Publishing")]
    pub retain: bool,

    /// 1: each message acknowledged by the broker (what --count counts); 0: fire and forget.
    #[arg(
        long,
        env = "MQTT2XMPP_QOS",
        default_value_t = 1,
        value_parser = clap::value_parser!(u8).range(0..=1),
        help_heading = "Publishing"
    )]
    pub qos: u8,

    /// Seed the random readings, to replay exactly the same run [default: random].
    #[arg(long, env = "MQTT2XMPP_SEED", help_heading = "Publishing")]
    pub seed: Option<u64>,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub mqtt: MqttArgs,
}

/// `10m`, `90s`, `1h 30m`, `500ms`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{e} (examples: 90s, 10m, 2h)"))
}

/// Lowest `simulate --rate`: one message every 1000 s (the simulator clamps to the same range).
pub const MIN_RATE: f64 = 0.001;

/// Highest `simulate --rate`: far above what one connection carries.
pub const MAX_RATE: f64 = 100_000.0;

/// `simulate --topic`: a topic a client may publish to (non-empty, no wildcards, no NUL, at most
/// 65 535 bytes).
pub fn parse_publish_topic(text: &str) -> Result<String, String> {
    if text.is_empty() {
        return Err("a topic cannot be empty (e.g. sensors/temperature)".into());
    }
    if text.contains(['+', '#']) {
        return Err("wildcards (+, #) are for subscribing; publish to one exact topic".into());
    }
    if text.contains('\0') || text.len() > 65_535 {
        return Err("not a valid MQTT topic".into());
    }
    Ok(text.to_string())
}

/// `--building`: one topic level (no `/`, no wildcards), at most 100 bytes.
pub fn parse_building(text: &str) -> Result<String, String> {
    if text.is_empty() || text.len() > 100 {
        return Err("give a building name of 1 to 100 characters, e.g. EDIFICIO_1".into());
    }
    if text.contains(['/', '+', '#', '\0']) {
        return Err("the building name is one topic level: no '/', '+' or '#'".into());
    }
    Ok(text.to_string())
}

/// `--rate`: messages per second, from [`MIN_RATE`] to [`MAX_RATE`], fractions allowed.
pub fn parse_rate(text: &str) -> Result<f64, String> {
    let rate: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a number (e.g. 5, 0.5, 2000)"))?;
    if !(MIN_RATE..=MAX_RATE).contains(&rate) {
        return Err(format!(
            "messages per second must be between {MIN_RATE} and {MAX_RATE}"
        ));
    }
    Ok(rate)
}

/// `--interval`: a positive duration such as `2s` or `500ms`.
pub fn parse_interval(text: &str) -> Result<Duration, String> {
    let interval =
        humantime::parse_duration(text).map_err(|e| format!("{e} (examples: 500ms, 2s, 1m)"))?;
    if interval.is_zero() {
        return Err("the interval must be longer than zero (examples: 500ms, 2s, 1m)".into());
    }
    Ok(interval)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults_match_the_documentation() {
        let cli = Cli::try_parse_from(["mqtt2xmpp", "bridge", "--jid", "bot@localhost"]).unwrap();
        let Command::Bridge(args) = cli.command else {
            panic!("not bridge")
        };
        assert_eq!(args.mqtt.mqtt_host, "127.0.0.1");
        assert_eq!(args.mqtt.mqtt_port, None);
        // No sensor given: config::sensors falls back to sensors/temperature.
        assert!(args.sensor.topic.is_empty() && args.sensor.sensors.is_empty());
        assert_eq!(args.sensor.sensors_file, None);
        assert_eq!(args.sensor.stale_after, Duration::from_secs(600));
    }

    #[test]
    fn sensor_flags_repeat_and_keep_their_order() {
        let cli = Cli::try_parse_from([
            "mqtt2xmpp",
            "bridge",
            "--jid",
            "bot@localhost",
            "--topic",
            "EDIFICIO_1/+/+/+/TEMP",
            "--sensor",
            "name=temp,topic=sensors/temperature",
            "--topic",
            "EDIFICIO_1/#",
            "--sensor",
            "name=vib,topic=v,unit=mm/s",
            "--sensors-file",
            "/etc/mqtt2xmpp/sensors.toml",
        ])
        .unwrap();
        let Command::Bridge(args) = cli.command else {
            panic!("not bridge")
        };
        assert_eq!(args.sensor.topic, ["EDIFICIO_1/+/+/+/TEMP", "EDIFICIO_1/#"]);
        assert_eq!(
            args.sensor.sensors,
            [
                "name=temp,topic=sensors/temperature",
                "name=vib,topic=v,unit=mm/s"
            ]
        );
        assert_eq!(
            args.sensor.sensors_file.as_deref(),
            Some(std::path::Path::new("/etc/mqtt2xmpp/sensors.toml"))
        );
    }

    #[test]
    fn durations_read_like_people_write_them() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("ten minutes")
            .unwrap_err()
            .contains("examples"));
    }

    #[test]
    fn there_is_no_password_flag() {
        let err = Cli::try_parse_from([
            "mqtt2xmpp",
            "bridge",
            "--jid",
            "bot@localhost",
            "--password",
            "x",
        ])
        .unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::UnknownArgument);
    }

    #[test]
    fn flag_values_are_checked_with_helpful_messages() {
        assert_eq!(parse_rate("2.5"), Ok(2.5));
        assert!(parse_rate("0").unwrap_err().contains("between"));
        assert!(parse_rate("fast").unwrap_err().contains("not a number"));
        assert!(parse_rate("NaN").is_err());
        assert!(parse_rate("1e9").is_err());
        assert_eq!(parse_interval("500ms"), Ok(Duration::from_millis(500)));
        assert!(parse_interval("0s")
            .unwrap_err()
            .contains("longer than zero"));
        assert!(parse_interval("soon").unwrap_err().contains("examples"));
        assert_eq!(parse_building("EDIFICIO_1"), Ok("EDIFICIO_1".into()));
        assert!(parse_building("a/b").is_err());
        assert!(parse_building("").is_err());
        assert!(parse_building("b+").is_err());
        assert_eq!(parse_publish_topic("a/b"), Ok("a/b".into()));
        assert!(parse_publish_topic("a/#")
            .unwrap_err()
            .contains("wildcards"));
        assert!(parse_publish_topic("").is_err());
    }

    #[test]
    fn flags_of_the_other_mode_and_out_of_range_values_are_refused() {
        use clap::error::ErrorKind;
        let kind = |args: &[&str]| parse_simulate(args).unwrap_err().kind();
        assert_eq!(
            kind(&["--building", "B", "--topic", "x"]),
            ErrorKind::ArgumentConflict
        );
        assert_eq!(
            kind(&["--building", "B", "--interval", "1s"]),
            ErrorKind::ArgumentConflict
        );
        assert_eq!(kind(&["--floors", "2"]), ErrorKind::MissingRequiredArgument);
        assert_eq!(kind(&["--rate", "2"]), ErrorKind::MissingRequiredArgument);
        assert_eq!(kind(&["--count", "0"]), ErrorKind::ValueValidation);
        assert_eq!(kind(&["--qos", "2"]), ErrorKind::ValueValidation);
        assert_eq!(
            kind(&["--building", "B", "--floors", "0"]),
            ErrorKind::ValueValidation
        );
        assert_eq!(kind(&["--topic", "a/+/b"]), ErrorKind::ValueValidation);
    }

    fn parse_simulate(args: &[&str]) -> Result<SimulateArgs, clap::Error> {
        let cli = Cli::try_parse_from(["mqtt2xmpp", "simulate"].iter().chain(args).copied())?;
        match cli.command {
            Command::Simulate(args) => Ok(args),
            other => panic!("parsed as {other:?}"),
        }
    }

    /// Parses `argv` (without the program name) or fails the test with clap's message.
    fn parse(argv: &[&str]) -> Cli {
        match Cli::try_parse_from(std::iter::once("mqtt2xmpp").chain(argv.iter().copied())) {
            Ok(cli) => cli,
            Err(error) => panic!("{argv:?} refused: {error}"),
        }
    }

    /// The data directory and verbosity `argv` sets, whatever the subcommand.
    fn shared_flags(argv: &[&str]) -> (PathBuf, u8) {
        let cli = parse(argv);
        let data_dir = match cli.command {
            Command::Server(args) => args.data.data_dir,
            Command::Up(args) => args.data.data_dir,
            Command::User(args) => args.data.data_dir,
            other => panic!("{other:?} has no data directory"),
        };
        (data_dir, cli.verbose)
    }

    #[test]
    fn data_dir_and_verbose_work_after_every_verb() {
        let verbs: [&[&str]; 7] = [
            &["server"],
            &["up"],
            &["user", "add", "alice@localhost", "--password-file", "pw"],
            &["user", "del", "alice@localhost"],
            &["user", "list"],
            &["user", "passwd", "alice@localhost"],
            &["user", "add", "alice@localhost"],
        ];
        for verb in verbs {
            let after: Vec<&str> = verb
                .iter()
                .copied()
                .chain(["--data-dir", "d", "-v"])
                .collect();
            assert_eq!(shared_flags(&after), (PathBuf::from("d"), 1), "{after:?}");
            // Before the verb's arguments, as before.
            let mut before = vec![verb[0], "--data-dir", "d", "-vv"];
            before.extend(&verb[1..]);
            assert_eq!(shared_flags(&before), (PathBuf::from("d"), 2), "{before:?}");
        }
    }

    #[test]
    fn the_data_dir_defaults_to_the_documented_directory() {
        let (data_dir, verbose) = shared_flags(&["user", "list"]);
        assert_eq!((data_dir, verbose), (PathBuf::from("mqtt2xmpp-data"), 0));
    }

    #[test]
    fn up_accepts_allow_lists_like_the_bridge() {
        let cli = parse(&[
            "up",
            "--allow",
            "alice@example.org,bob@example.org",
            "--allow-domain",
            "example.net",
            "--allow",
            "carol@example.org",
        ]);
        let Command::Up(args) = cli.command else {
            panic!("not up")
        };
        assert_eq!(
            args.allow,
            ["alice@example.org", "bob@example.org", "carol@example.org"]
        );
        assert_eq!(args.allow_domain, ["example.net"]);
    }
}
