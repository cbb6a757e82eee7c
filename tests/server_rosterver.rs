//! Roster versioning (RFC 6121 §2.6) and the server's entity capabilities (XEP-0115) as the
//! real slixmpp client library meets them (Debian `python3-slixmpp`, 1.8.3).
//!
//! The client is `tests/slixmpp/rosterver.py`, run with Debian's `/usr/bin/python3`: one run is
//! one session of alice with a roster cache kept in a file, as a phone keeps it. slixmpp sends
//! the version it stored when the server offers roster versioning, and its XEP-0115 plugin
//! checks the caps of the stream features against the server's disco#info. The assertions are
//! here. Without slixmpp the tests skip, unless CI=true, where they fail.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use support::peers::{python_imports, run_event_script};
use support::server::ServerProcess;

/// Debian's interpreter, which sees `python3-slixmpp`.
const PYTHON: &str = "/usr/bin/python3";
const CLIENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/slixmpp/rosterver.py");
const ALICE_PASSWORD: &str = "alice-secret";
const BOB: &str = "bob@localhost";
/// How long one run of the client may take (each of its waits is 10 s at most).
const CLIENT_DEADLINE: Duration = Duration::from_secs(40);

/// Whether `/usr/bin/python3` can import slixmpp; if not, panics under CI=true and otherwise
/// prints "skipping…".
fn slixmpp_installed() -> bool {
    python_imports(
        PYTHON,
        "slixmpp",
        "install the Debian package python3-slixmpp",
    )
}

/// What one session reported, by event name.
struct Session {
    events: Vec<Value>,
    stdout: String,
}

impl Session {
    /// The one event named `event`.
    fn one(&self, event: &str) -> &Value {
        let found: Vec<&Value> = self.events.iter().filter(|e| e["event"] == event).collect();
        match found.as_slice() {
            [event] => event,
            _ => panic!(
                "expected one {event:?} event, found {}:\n{}",
                found.len(),
                self.stdout
            ),
        }
    }

    /// The roster report: what was sent, what came back, slixmpp's roster afterwards.
    fn roster(&self) -> &Value {
        self.one("roster")
    }

    /// The version slixmpp stored at the end of the session.
    fn cached_ver(&self) -> &str {
        self.one("cache")["ver"].as_str().expect("a stored ver")
    }
}

/// One session of alice with `resource`, her roster cached in `cache`; with `set_name`, she
/// names bob so (adding him if needed). Panics (with the client's and the server's output) if
/// the run fails or does not finish within CLIENT_DEADLINE.
fn session(
    server: &ServerProcess,
    cache: &Path,
    resource: &str,
    set_name: Option<&str>,
) -> Session {
    let mut command = Command::new(PYTHON);
    command
        .arg(CLIENT)
        .args(["--port", &server.port.to_string()])
        .arg("--ca")
        .arg(&server.ca_file)
        .args(["--alice-password", ALICE_PASSWORD])
        .arg("--cache")
        .arg(cache)
        .args(["--resource", resource]);
    if let Some(name) = set_name {
        command.args(["--set-name", name]);
    }
    let (events, stdout) = run_event_script(
        &mut command,
        &format!("rosterver.py ({resource})"),
        CLIENT_DEADLINE,
        || server.log(),
    );
    Session { events, stdout }
}

/// A server for `localhost` with the accounts alice and bob.
fn server_with_accounts() -> ServerProcess {
    let server = ServerProcess::start();
    server.add_user("alice", ALICE_PASSWORD);
    server.add_user("bob", "bob-secret");
    server
}

#[test]
fn a_client_that_caches_its_roster_fetches_it_only_when_it_changed() {
    if !slixmpp_installed() {
        return;
    }
    let mut server = server_with_accounts();
    let caches = tempfile::tempdir().expect("temp dir");
    let phone = caches.path().join("phone.json");
    let laptop = caches.path().join("laptop.json");

    // 1. The phone's first login: nothing cached, so it sends an empty ver (§2.6.2) and gets
    // the whole (empty) roster with its ver; then it adds bob, and the push carries the next.
    let first = session(&server, &phone, "phone", Some("Bob"));
    assert_eq!(first.one("login")["rosterver"], true, "{}", first.stdout);
    let roster = first.roster();
    assert_eq!(roster["sent_ver"], "", "{roster}");
    assert_eq!(roster["empty"], false, "{roster}");
    assert_eq!(roster["items"], json!([]), "{roster}");
    let v0 = roster["ver"]
        .as_str()
        .expect("a ver on the result")
        .to_string();
    let push = first.one("push");
    let v1 = push["ver"].as_str().expect("a ver on the push").to_string();
    assert_ne!(v1, v0);
    assert_eq!(first.cached_ver(), v1, "slixmpp stores the push's ver");

    // 2. After a restart of the server, nothing changed: an empty result, and the phone's
    // roster is its cache.
    server.restart();
    let second = session(&server, &phone, "phone", None);
    let roster = second.roster();
    assert_eq!(roster["sent_ver"], v1.as_str(), "{roster}");
    assert_eq!(roster["empty"], true, "nothing changed since v1: {roster}");
    assert_eq!(
        roster["state"],
        json!({BOB: {"name": "Bob", "subscription": "none"}}),
        "the cached roster"
    );
    assert_eq!(second.cached_ver(), v1);

    // 3. The laptop renames bob while the phone is away.
    let laptop_session = session(&server, &laptop, "laptop", Some("Robert"));
    let v2 = laptop_session.one("push")["ver"]
        .as_str()
        .expect("a ver")
        .to_string();
    assert_ne!(v2, v1);

    // 4. The phone's next login sends v1, now stale: the whole roster with the new ver.
    let third = session(&server, &phone, "phone", None);
    let roster = third.roster();
    assert_eq!(roster["sent_ver"], v1.as_str(), "{roster}");
    assert_eq!(roster["empty"], false, "{roster}");
    assert_eq!(roster["ver"], v2.as_str(), "{roster}");
    assert_eq!(roster["items"], json!([BOB]), "{roster}");
    assert_eq!(
        roster["state"],
        json!({BOB: {"name": "Robert", "subscription": "none"}}),
        "the roster as the server has it"
    );
    assert_eq!(third.cached_ver(), v2);

    // 5. And then nothing to fetch again.
    let fourth = session(&server, &phone, "phone", None);
    assert_eq!(fourth.roster()["sent_ver"], v2.as_str());
    assert_eq!(fourth.roster()["empty"], true, "{}", fourth.stdout);
}

#[test]
fn slixmpp_validates_the_servers_caps_against_its_disco_info() {
    if !slixmpp_installed() {
        return;
    }
    let mut server = server_with_accounts();
    let caches = tempfile::tempdir().expect("temp dir");
    let run = session(&server, &caches.path().join("phone.json"), "phone", None);
    let caps = &run.one("login")["caps"];
    assert_eq!(caps["hash"], "sha-1", "{caps}");
    assert_eq!(caps["node"], "https://crates.io/crates/mqtt2xmpp", "{caps}");
    let ver = caps["ver"].as_str().expect("a caps ver");
    // slixmpp's caps plugin fetched NODE#VER and stored the ver only after checking it; the
    // ver it computes from a plain disco#info is the same.
    let checked = run.one("caps");
    assert_eq!(checked["validated"], true, "{checked}");
    assert_eq!(checked["computed"], ver, "{checked}");
    let features = checked["features"].as_array().expect("features");
    assert!(
        features.contains(&json!("http://jabber.org/protocol/caps")),
        "XEP-0115 §7: {features:?}"
    );
    // The same server started again advertises the same caps: clients cache them once.
    server.restart();
    let again = session(&server, &caches.path().join("phone.json"), "phone", None);
    assert_eq!(again.one("login")["caps"], *caps);
}
