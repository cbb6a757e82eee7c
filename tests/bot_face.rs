//! The bot's face as a contact's own client sees it: slixmpp with its vCard (XEP-0054,
//! XEP-0153), PEP avatar (XEP-0084), nickname (XEP-0172) and caps (XEP-0115) plugins,
//! Debian's 1.8.3 (`/usr/bin/python3`) and the current release from PyPI
//! (`target/slixmpp-venv`, made by `.ci/run`), running `tests/slixmpp/face.py` against the bot
//! on the bundled server and on Prosody (set up from `deploy/prosody-mqtt2xmpp.cfg.lua`, whose
//! `pep` and `vcard_legacy` modules carry the face). The contact subscribes to the bot and:
//!
//! - receives its presence with the avatar's SHA-1 in `vcard-temp:x:update` (XEP-0153 §3.1),
//!   which slixmpp's plugin reports as an avatar update, and with caps whose `ver` slixmpp's
//!   own XEP-0115 code computes from the bot's disco#info (identity `client/bot`);
//! - fetches the vCard: name, nickname, description and the shipped avatar as the photo;
//! - fetches the PEP avatar metadata (XEP-0084 §4.2) and the data item it names, whose id is
//!   the SHA-1 of the image bytes (§4.2.1) and whose bytes are the shipped image;
//! - fetches the PEP nickname (XEP-0172 §4).
//!
//! ejabberd is covered by `tests/bot_identity.rs` (with a Rust client). Without an
//! interpreter, its slixmpp, Prosody or mosquitto these tests skip, unless CI=true, where they
//! fail.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use sha1::{Digest, Sha1};
use support::peers::{event, python_imports, run_event_script, DEBIAN_PYTHON, VENV_PYTHON};
use support::world::{Kind, World, BOT};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/slixmpp/face.py");
const STEP: Duration = Duration::from_secs(20);

/// The avatar the crate ships.
fn avatar() -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/avatar.png"))
        .expect("assets/avatar.png")
}

fn sha1_hex(bytes: &[u8]) -> String {
    Sha1::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether `python` has slixmpp (a skip, or a failure with CI=true, when not).
fn have_slixmpp(python: &str) -> bool {
    let install = if python == DEBIAN_PYTHON {
        "install the Debian package python3-slixmpp"
    } else {
        "python3 -m venv target/slixmpp-venv && target/slixmpp-venv/bin/pip install slixmpp aiohttp"
    };
    python_imports(python, "slixmpp", install)
}

async fn a_contact_sees_the_bots_face(python: &'static str, kind: Kind) {
    if !have_slixmpp(python) {
        return;
    }
    let Some(world) = World::start(kind).await else {
        return;
    };
    let bot = world.start_bot(&[]).await;
    bot.wait_log("published the bot's nickname, vCard and avatar", 1, STEP)
        .await;
    let image = avatar();
    let digest = sha1_hex(&image);

    let mut command = Command::new(python);
    command
        .arg(SCRIPT)
        .args(["--port", &world.xmpp.port().to_string()])
        .args(["--ca", &world.xmpp.ca_file().to_string_lossy()])
        .args([
            "--bot",
            BOT,
            "--user",
            "alice",
            "--password",
            "alice-secret",
        ]);
    let log = bot.log();
    let label = format!("{python} face.py");
    let events: Vec<Value> = tokio::task::spawn_blocking(move || {
        run_event_script(&mut command, &label, Duration::from_secs(90), || {
            log.clone()
        })
        .0
    })
    .await
    .expect("the script runner");

    // XEP-0153: the photo's hash in the presence, as slixmpp's plugin reads it.
    let presence = event(&events, "presence");
    assert_eq!(presence["photo"], digest.as_str(), "{presence}");
    assert!(
        presence["avatar_updates"]
            .as_array()
            .is_some_and(|u| u.iter().any(|p| p == digest.as_str())),
        "{presence}"
    );
    // XEP-0115: caps whose ver is what slixmpp computes from the bot's disco#info.
    assert_eq!(presence["caps"]["hash"], "sha-1", "{presence}");
    let caps = event(&events, "caps");
    assert_eq!(caps["computed"], caps["ver"], "{caps}");
    assert!(
        caps["identities"]
            .as_array()
            .is_some_and(|ids| ids.iter().any(|i| i[0] == "client" && i[1] == "bot")),
        "{caps}"
    );

    // XEP-0054: name, nickname, description, and the shipped image as the photo.
    let vcard = event(&events, "vcard");
    assert_eq!(vcard["fn"], "mqtt2xmpp", "{vcard}");
    assert_eq!(vcard["nickname"], "mqtt2xmpp", "{vcard}");
    // Prosody's vcard_legacy keeps the vCard as vCard4 in PEP and gives DESC back as NOTE.
    let description = if vcard["desc"].is_string() {
        &vcard["desc"]
    } else {
        &vcard["note"]
    };
    assert_eq!(description, "mqtt2xmpp sensor bot: send help", "{vcard}");
    assert_eq!(vcard["photo_type"], "image/png", "{vcard}");
    assert_eq!(vcard["photo_bytes"], image.len(), "{vcard}");
    assert_eq!(vcard["photo_sha1"], digest.as_str(), "{vcard}");

    // XEP-0084: one metadata item naming the image by its SHA-1, and that data item.
    let metadata = event(&events, "metadata")["items"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(metadata.len(), 1, "{metadata:?}");
    let info = &metadata[0];
    assert_eq!(info["id"], digest.as_str(), "{info}");
    assert_eq!(info["item"], digest.as_str(), "{info}");
    assert_eq!(info["type"], "image/png", "{info}");
    assert_eq!(info["bytes"], image.len().to_string(), "{info}");
    let data = event(&events, "avatar");
    assert_eq!(data["data_items"], 1, "{data}");
    assert_eq!(data["bytes"], image.len(), "{data}");
    assert_eq!(data["sha1"], digest.as_str(), "{data}");

    // XEP-0172: the nickname through PEP.
    assert_eq!(
        event(&events, "nick")["nicks"],
        serde_json::json!(["mqtt2xmpp"])
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debian_slixmpp_sees_the_bots_face_on_the_bundled_server() {
    a_contact_sees_the_bots_face(DEBIAN_PYTHON, Kind::Bundled).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debian_slixmpp_sees_the_bots_face_on_prosody() {
    a_contact_sees_the_bots_face(DEBIAN_PYTHON, Kind::Peers).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn current_slixmpp_sees_the_bots_face_on_the_bundled_server() {
    a_contact_sees_the_bots_face(VENV_PYTHON, Kind::Bundled).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn current_slixmpp_sees_the_bots_face_on_prosody() {
    a_contact_sees_the_bots_face(VENV_PYTHON, Kind::Peers).await
}
