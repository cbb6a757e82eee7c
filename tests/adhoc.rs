//! The bot's ad-hoc commands (XEP-0050 with XEP-0004 forms) driven by slixmpp's `xep_0050`
//! and `xep_0004` plugins, Debian's 1.8.3 (`/usr/bin/python3`) and the current release from
//! PyPI (`target/slixmpp-venv`, made by `.ci/run`), running `tests/slixmpp/adhoc.py` against
//! the bot on the bundled server and on Prosody:
//!
//! - a contact on the allow list: the list, a one-step command, a form with a table, the
//!   two-stage "Statistics" through next, prev, next and complete (its figures compared with
//!   the `stats` text command's), a number field refusing a word, cancel, a session used after
//!   cancel (`session-expired`) and a made-up session id (`bad-sessionid`);
//! - a contact not on the allow list: no commands listed, `forbidden` on running one;
//! - hostile: a thousand open sessions from one contact (only the newest ten stay), and a form
//!   with thousands of fields, refused with `bad-payload`. On Prosody it has ten thousand
//!   (empty) fields, about 200 KB, under its 256 KiB stanza limit. The bundled server ends the
//!   stream of a stanza with more than 4096 elements (`--max-elements`) before the bot sees it,
//!   so there the form has 4000 fields, as many as get through.
//!
//! profanity (through tmux) lists the commands with `/cmd list` and runs "Stale sensors" with
//! `/cmd exec`, on the bundled server and on Prosody with `mod_adhoc`, which the deploy snippet
//! enables (profanity offers `/cmd` only when the user's server advertises the commands feature).
//!
//! A session's expiry: the bot is started with `--command-session-lifetime 0s` (a hidden flag;
//! 10 minutes by default), so a session has expired by its next request without the test
//! waiting; the contact is told `not-allowed` with `<session-expired/>` (XEP-0050 §4.4), as
//! after a cancel.
//! Without an interpreter, its slixmpp, Prosody, mosquitto, profanity or tmux, these tests
//! skip, unless CI=true, where they fail.

mod support;

use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use support::bridge::InProcessBridge;
use support::files::password_file;
use support::mqtt::publish;
use support::peers::{
    event, python_imports, run_event_script, Prosody, DEBIAN_PYTHON, VENV_PYTHON,
};
use support::server::InProcessServer;
use support::world::{Broker, Kind, World, ALICE, BOT};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/slixmpp/adhoc.py");
const SCRIPT_DEADLINE: Duration = Duration::from_secs(100);
/// The bot's full JID: its resource fixed so the script knows where the commands are.
const BOT_FULL: &str = "bot@localhost/sensors";
const NS: &str = "http://jabber.org/protocol/commands";

/// Runs each scenario with both slixmpp versions against both servers.
macro_rules! with_every_client_and_server {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            use super::{Kind, DEBIAN_PYTHON, VENV_PYTHON};

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn debian_slixmpp_bundled() {
                super::$scenario(DEBIAN_PYTHON, Kind::Bundled).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn debian_slixmpp_prosody() {
                super::$scenario(DEBIAN_PYTHON, Kind::Peers).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn current_slixmpp_bundled() {
                super::$scenario(VENV_PYTHON, Kind::Bundled).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn current_slixmpp_prosody() {
                super::$scenario(VENV_PYTHON, Kind::Peers).await
            }
        }
    )*};
}

with_every_client_and_server!(
    a_contact_lists_and_runs_the_commands,
    a_stranger_sees_no_commands_and_is_refused,
    an_expired_session_is_said_to_be_expired,
    hostile_a_thousand_sessions_and_a_form_of_thousands_of_fields_stay_bounded,
);

/// Whether `python` has slixmpp (a skip, or a failure with CI=true, when not).
fn have_slixmpp(python: &str) -> bool {
    let install = if python == DEBIAN_PYTHON {
        "install the Debian package python3-slixmpp"
    } else {
        "python3 -m venv target/slixmpp-venv && target/slixmpp-venv/bin/pip install slixmpp aiohttp"
    };
    python_imports(python, "slixmpp", install)
}

/// The world, with carol (not allowed) registered, and the bot on `BOT_FULL` allowing alice.
async fn start(kind: Kind, extra: &[&str]) -> Option<(World, InProcessBridge)> {
    let world = World::start(kind).await?;
    world.xmpp.register("carol", "carol-secret");
    let mut args = world.bridge_args("bot-secret", extra);
    if let Some(jid) = args.iter().position(|a| a == "--jid") {
        args[jid + 1] = BOT_FULL.to_string();
    }
    args.extend(
        [
            "--allow",
            ALICE,
            "--sensor",
            "name=temp,topic=sensors/temperature,unit=°C",
        ]
        .map(String::from),
    );
    let bot = InProcessBridge::start(&args).await;
    Some((world, bot))
}

/// Runs adhoc.py as `user` in `mode` with `extra` arguments; returns its events.
async fn run(
    python: &str,
    world: &World,
    bot: &InProcessBridge,
    user: &str,
    mode: &str,
    extra: &[&str],
) -> Vec<Value> {
    let mut command = Command::new(python);
    command
        .arg(SCRIPT)
        .args(extra)
        .args(["--port", &world.xmpp.port().to_string()])
        .args(["--ca", &world.xmpp.ca_file().to_string_lossy()])
        .args(["--bot", BOT_FULL, "--user", user])
        .args(["--password", &format!("{user}-secret"), "--mode", mode]);
    let log = bot.log();
    let label = format!("{python} adhoc.py --mode {mode}");
    tokio::task::spawn_blocking(move || {
        run_event_script(&mut command, &label, SCRIPT_DEADLINE, || log.clone()).0
    })
    .await
    .expect("the script runner")
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {value}"))
        .iter()
        .map(|v| v.as_str().unwrap_or_default().to_string())
        .collect()
}

async fn a_contact_lists_and_runs_the_commands(python: &str, kind: Kind) {
    if !have_slixmpp(python) {
        return;
    }
    let Some((world, bot)) = start(kind, &["--reply-burst", "100"]).await else {
        return;
    };
    // Three readings, each seen by the bot before the next is published (so they arrive in
    // order), then the text command's statistics to compare with.
    let mut alice = world.alice().await;
    for value in ["20", "22", "24"] {
        publish(
            world.mqtt.port(),
            "sensors/temperature",
            value.as_bytes(),
            false,
        )
        .await;
        alice
            .ask_until(
                BOT,
                |r| r.starts_with(&format!("{value} °C")),
                Duration::from_secs(10),
            )
            .await;
    }
    let text = alice.ask(BOT, "stats temp 1h").await;
    assert!(text.contains("3 readings"), "{text}");
    let events = run(python, &world, &bot, "alice", "contact", &[]).await;

    // The list: every command, as items of the bot's full JID (§2.2).
    let list = event(&events, "list");
    let mut names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .inspect(|item| assert_eq!(item[0], BOT_FULL, "{item}"))
        .map(|item| item[2].as_str().unwrap_or_default())
        .collect();
    // slixmpp keeps disco items in a set: their order is lost.
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "My alerts",
            "Read sensors",
            "Set an alert",
            "Stale sensors",
            "Statistics",
        ]
    );
    let info = event(&events, "info");
    assert_eq!(info["identities"][0][0], "automation", "{info}");
    assert_eq!(info["identities"][0][1], "command-node", "{info}");
    assert!(
        strings(&info["features"]).contains(&NS.to_string()),
        "{info}"
    );

    // One step: completed at once, nothing stale.
    let stale = &event(&events, "stale")["answer"];
    assert_eq!(stale["status"], "completed", "{stale}");
    assert!(
        stale["notes"][0][1]
            .as_str()
            .is_some_and(|n| n.starts_with("Nothing is stale")),
        "{stale}"
    );

    // A form whose labels carry the current value, then a table.
    let form = &event(&events, "read_form")["answer"];
    assert_eq!(form["status"], "executing", "{form}");
    let label = form["options"]["sensors"][0].as_str().unwrap_or_default();
    assert!(label.starts_with("temp: 24 °C ("), "{form}");
    let read = &event(&events, "read")["answer"];
    assert_eq!(read["status"], "completed", "{read}");
    let row = &read["rows"][0];
    assert_eq!(row["sensor"], "temp", "{read}");
    assert_eq!(row["value"], "24", "{read}");
    assert_eq!(row["unit"], "°C", "{read}");
    assert_eq!(row["stale"], "no", "{read}");

    // Two stages, with prev in between.
    let stats = event(&events, "stats");
    assert_eq!(
        strings(&stats["first"]["actions"]),
        ["next", "next"],
        "{stats}"
    );
    assert_eq!(
        strings(&stats["next"]["actions"]),
        ["complete", "prev", "complete"],
        "{stats}"
    );
    assert_eq!(
        strings(&stats["prev"]["fields"]["sensor"]),
        ["temp"],
        "{stats}"
    );
    let result = &stats["complete"];
    assert_eq!(result["status"], "completed", "{stats}");
    let figure = |var: &str| strings(&result["fields"][var]).join("");
    assert_eq!(figure("min"), "20 °C");
    assert_eq!(figure("max"), "24 °C");
    assert_eq!(figure("count"), "3");
    // The same figures as the text command's.
    assert!(
        text.contains(&format!(
            "min {}, max {}, avg {}, {} readings\n{}",
            figure("min"),
            figure("max"),
            figure("avg"),
            figure("count"),
            figure("sparkline")
        )),
        "{text} vs {result}"
    );

    // A number field: typed, a word refused with the form again, a number accepted.
    let alert = event(&events, "alert");
    assert_eq!(
        alert["second"]["datatypes"]["threshold"], "xs:decimal",
        "{alert}"
    );
    assert_eq!(alert["bad"]["status"], "executing", "{alert}");
    assert_eq!(alert["bad"]["notes"][0][0], "error", "{alert}");
    assert_eq!(alert["good"]["status"], "completed", "{alert}");
    assert!(
        alert["good"]["notes"][0][1]
            .as_str()
            .is_some_and(|n| n.starts_with("Alert set: I will tell you when temp goes above 30 °C")),
        "{alert}"
    );

    // Cancel, and the session is over (XEP-0050 §4.4: no longer active); a made-up one never
    // was.
    assert_eq!(event(&events, "cancel")["answer"]["status"], "canceled");
    let after_cancel = &event(&events, "after_cancel")["error"];
    assert_eq!(after_cancel["condition"], "not-allowed", "{after_cancel}");
    assert_eq!(
        strings(&after_cancel["specific"]),
        ["session-expired"],
        "{after_cancel}"
    );
    let unknown = &event(&events, "unknown_session")["error"];
    assert_eq!(unknown["condition"], "bad-request", "{unknown}");
    assert_eq!(
        strings(&unknown["specific"]),
        ["bad-sessionid"],
        "{unknown}"
    );
    if python == DEBIAN_PYTHON {
        let done = event(&events, "done");
        assert!(
            done["slixmpp"]
                .as_str()
                .is_some_and(|v| v.starts_with("1.8")),
            "{done}"
        );
    }
}

async fn a_stranger_sees_no_commands_and_is_refused(python: &str, kind: Kind) {
    if !have_slixmpp(python) {
        return;
    }
    let Some((world, bot)) = start(kind, &[]).await else {
        return;
    };
    let events = run(python, &world, &bot, "carol", "stranger", &[]).await;
    assert_eq!(event(&events, "list")["items"], serde_json::json!([]));
    let refused = &event(&events, "refused")["error"];
    assert_eq!(refused["condition"], "forbidden", "{refused}");
}

async fn an_expired_session_is_said_to_be_expired(python: &str, kind: Kind) {
    if !have_slixmpp(python) {
        return;
    }
    let Some((world, bot)) = start(kind, &["--command-session-lifetime", "0s"]).await else {
        return;
    };
    let events = run(python, &world, &bot, "alice", "expired", &[]).await;
    let started = &event(&events, "started")["answer"];
    assert_eq!(started["status"], "executing", "{started}");
    // XEP-0050 §4.4: "a sessionid that is no longer active (... timed out)" is `not-allowed`
    // with `<session-expired/>`, an error of type cancel.
    let expired = &event(&events, "expired")["error"];
    assert_eq!(expired["condition"], "not-allowed", "{expired}");
    assert_eq!(expired["type"], "cancel", "{expired}");
    assert_eq!(
        strings(&expired["specific"]),
        ["session-expired"],
        "{expired}"
    );
    // Remembered as ended: said again.
    let again = &event(&events, "expired_again")["error"];
    assert_eq!(again["condition"], "not-allowed", "{again}");
    assert_eq!(strings(&again["specific"]), ["session-expired"], "{again}");
    // A command of one step has no session to expire.
    assert_eq!(
        event(&events, "one_step")["answer"]["status"],
        "completed",
        "{events:?}"
    );
    event(&events, "done");
}

async fn hostile_a_thousand_sessions_and_a_form_of_thousands_of_fields_stay_bounded(
    python: &str,
    kind: Kind,
) {
    if !have_slixmpp(python) {
        return;
    }
    // A rate limit that lets the thousand through: the session bound is what is tested.
    let Some((world, bot)) = start(
        kind,
        &["--reply-burst", "5000", "--replies-per-minute", "60000"],
    )
    .await
    else {
        return;
    };
    // As many fields as the server lets through (see the module doc), far over the bot's 64.
    let fields = match kind {
        Kind::Bundled => "4000",
        Kind::Peers => "10000",
    };
    let events = run(
        python,
        &world,
        &bot,
        "alice",
        "hostile",
        &["--fields", fields],
    )
    .await;
    let opened = event(&events, "opened");
    assert_eq!(opened["count"], 1000, "{opened}");
    assert_eq!(opened["distinct"], 1000, "{opened}");
    // Only the newest ten are kept: the first is gone, the last goes on.
    let oldest = &event(&events, "oldest")["error"];
    assert_eq!(strings(&oldest["specific"]), ["bad-sessionid"], "{oldest}");
    assert_eq!(event(&events, "newest")["answer"]["status"], "executing");
    // The huge form is refused as a bad payload, and the session survives it.
    let huge = &event(&events, "huge_form")["error"];
    assert_eq!(huge["condition"], "bad-request", "{huge}");
    assert_eq!(strings(&huge["specific"]), ["bad-payload"], "{huge}");
    assert_eq!(
        event(&events, "after_huge_form")["answer"]["status"],
        "executing"
    );
    event(&events, "done");
}

/// profanity (Debian, through tmux; see `support::profanity`) lists the bot's commands with
/// `/cmd list` and runs the one-step "Stale sensors" with `/cmd exec`. profanity offers `/cmd`
/// only when the user's *server* advertises the commands feature (XEP-0050 §2.1): the bundled
/// server does, and Prosody with `mod_adhoc` (enabled by the deploy snippet).
async fn profanity_lists_the_commands_and_runs_one(kind: Kind) {
    let Some((profanity, tmux)) = support::profanity::find_programs() else {
        return;
    };
    let Some(mqtt) = Broker::start(kind).await else {
        return;
    };
    let xmpp = match kind {
        Kind::Bundled => ProfanityServer::Bundled(InProcessServer::start().await),
        // mod_adhoc is in the deploy snippet.
        Kind::Peers => match Prosody::start() {
            Some(prosody) => ProfanityServer::Prosody(prosody),
            None => return,
        },
    };
    let (port, ca_file) = match &xmpp {
        ProfanityServer::Bundled(s) => (s.port, s.ca_file.clone()),
        ProfanityServer::Prosody(s) => (s.port, s.ca_file.clone()),
    };
    for user in ["bot", "alice"] {
        let password = format!("{user}-secret");
        match &xmpp {
            ProfanityServer::Bundled(s) => s.add_user(user, &password),
            ProfanityServer::Prosody(s) => s.register(user, &password),
        }
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let args = [
        "bridge".to_string(),
        "--mqtt-port".into(),
        mqtt.port().to_string(),
        "--jid".into(),
        BOT_FULL.into(),
        "--password-file".into(),
        password_file(dir.path(), "bot.pw", "bot-secret"),
        "--xmpp-server".into(),
        format!("127.0.0.1:{port}"),
        "--xmpp-ca".into(),
        ca_file.to_string_lossy().into_owned(),
        "--allow".into(),
        ALICE.into(),
        "--sensor".into(),
        "name=temp,topic=sensors/temperature,unit=°C".into(),
    ];
    let _bot = InProcessBridge::start(&args).await;
    // profanity's calls wait on its screen: keep them off the runtime's workers.
    tokio::task::block_in_place(|| {
        let session = support::profanity::Profanity::start(&profanity, &tmux, &ca_file);
        session.connect(ALICE, "alice-secret", port);
        // profanity decides whether to offer `/cmd` from the server's disco#info, which it
        // asks for after logging in: wait until it has the answer.
        session.wait_log("the server's disco#info listing ad-hoc commands", |log| {
            support::profanity::disco_features(log, "localhost")
                .iter()
                .any(|feature| feature == NS)
        });
        session.type_line(&format!("/cmd list {BOT_FULL}"));
        // profanity lists the nodes, sorted.
        session.wait_for("Ad hoc commands:");
        let screen = session.wait_until("the five commands", |screen| {
            screen.contains("!   statistics")
        });
        let listed: Vec<&str> = screen
            .lines()
            .skip_while(|line| !line.contains("Ad hoc commands:"))
            .skip(1)
            .filter_map(|line| line.split_once("!   ").map(|(_, node)| node.trim()))
            .collect();
        assert_eq!(
            listed,
            [
                "my-alerts",
                "read-sensors",
                "set-alert",
                "stale-sensors",
                "statistics"
            ],
            "{screen}"
        );
        session.type_line(&format!("/cmd exec stale-sensors {BOT_FULL}"));
        // The result form opens in a window of its own; the console says it completed and
        // shows the note (no reading yet: the one sensor was never heard from).
        session.wait_for("Form title: Stale sensors");
        session.type_line("/win 1");
        let console = session.wait_for("stale-sensors completed");
        assert!(
            console.contains("1 of 1 topics have sent nothing for over 10 min."),
            "{console}"
        );
    });
}

// One per test: the size difference of the variants costs nothing.
#[allow(clippy::large_enum_variant)]
enum ProfanityServer {
    Bundled(InProcessServer),
    Prosody(Prosody),
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profanity_lists_the_commands_and_runs_one_on_the_bundled_server() {
    profanity_lists_the_commands_and_runs_one(Kind::Bundled).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profanity_lists_the_commands_and_runs_one_on_prosody() {
    profanity_lists_the_commands_and_runs_one(Kind::Peers).await
}
