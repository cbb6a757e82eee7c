// xmpp.js (`@xmpp/client` from npm) as a user of the bot: logs in over STARTTLS, sends the
// bot one question and prints the first answer. Driven by tests/clients.rs; prints JSON lines
// ({"event": "online" | "answer" | "error", ...}) and exits 0 once it has an answer.
//
// Environment: XMPPJS_MODULES (the node_modules directory `npm install` made, see .ci/run),
// XMPP_PORT, XMPP_USER, XMPP_PASSWORD, BOT_JID, QUESTION, and NODE_EXTRA_CA_CERTS (the server's
// self-signed certificate). The deadline is the caller's: it kills this process.
import { createRequire } from "node:module";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const env = (name) => {
  const value = process.env[name];
  if (!value) {
    emit("error", { message: `${name} is not set` });
    process.exit(2);
  }
  return value;
};

function emit(event, fields = {}) {
  console.log(JSON.stringify({ event, ...fields }));
}

const require = createRequire(join(env("XMPPJS_MODULES"), "resolve-from-here.js"));
const { client, xml } = await import(pathToFileURL(require.resolve("@xmpp/client")).href);

const bot = env("BOT_JID");
const xmpp = client({
  service: `xmpp://127.0.0.1:${env("XMPP_PORT")}`,
  domain: "localhost",
  resource: "xmppjs",
  username: env("XMPP_USER"),
  password: env("XMPP_PASSWORD"),
});

// Without this, xmpp.js reconnects after a failure and the caller would only see a timeout.
xmpp.reconnect.stop();

xmpp.on("error", (error) => {
  emit("error", { message: String(error && (error.message || error)) });
  process.exit(1);
});

xmpp.on("stanza", async (stanza) => {
  if (!stanza.is("message")) return;
  const from = stanza.attrs.from || "";
  const body = stanza.getChildText("body");
  if (body && from.split("/")[0] === bot && stanza.attrs.type !== "error") {
    emit("answer", { from, body });
    await xmpp.stop().catch(() => {});
    process.exit(0);
  }
});

xmpp.on("online", async (address) => {
  emit("online", { jid: address.toString() });
  await xmpp.send(xml("presence"));
  await xmpp.send(
    xml("message", { type: "chat", to: bot }, xml("body", {}, env("QUESTION"))),
  );
});

await xmpp.start();
