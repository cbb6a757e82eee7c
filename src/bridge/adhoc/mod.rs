//! The bot's XEP-0050 ad-hoc commands: the chat commands as forms clients draw (XEP-0004),
//! through the same access rules and the same code as the text commands.
//!
//! | module | what it does |
//! |---|---|
//! | [`command`] | the `<command/>` element: requests, answers, the §4.4 errors |
//! | [`sessions`] | open multi-stage sessions: owner, expiry, bounds |
//! | [`form`] | the data-form fields, the result table, reading submissions |
//! | [`read`], [`stats`], [`alert`], [`my_alerts`], [`stale`] | one command each |
//!
//! Discovery: disco#items on the node `http://jabber.org/protocol/commands` of the bot's full
//! JID lists the commands the asker may run (§2.2); disco#info on a command's node answers
//! with the `automation/command-node` identity (also §2.2).
//!
//! Access: the allow list and the per-contact rate limit of the text commands
//! ([`Bot::admit_as`]). A contact not allowed, or asking for a command only allowed contacts
//! may run (statistics, setting an alert), gets `forbidden` (§4.4); one over the rate limit
//! gets `resource-constraint` (RFC 6120 §8.3.3.18), and every request of a session counts.
//!
//! A command is a list of stages, each a form (see [`Kind::stages`]); a stage's submission is
//! checked before the next stage, and a bad one (a number that is not one) shows the same form
//! again with an `error` note rather than failing the session. `prev` goes back with what was
//! entered kept; `cancel` ends the session. Errors (§4.4): an unknown session, or another
//! JID's, is `bad-request` + `<bad-sessionid/>`; one no longer active (completed, canceled or
//! timed out) `not-allowed` + `<session-expired/>`; an action the stage does not offer
//! `bad-request` + `<bad-action/>`.

pub mod alert;
pub mod command;
pub mod form;
pub mod my_alerts;
pub mod read;
pub mod sessions;
pub mod stale;
pub mod stats;

#[cfg(test)]
mod tests;

use std::time::Instant;

use tokio_xmpp::jid::Jid;
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::data_forms::{DataForm, DataFormType, Field, FieldType};
use tokio_xmpp::parsers::disco::{
    DiscoInfoQuery, DiscoInfoResult, DiscoItemsQuery, DiscoItemsResult, Identity, Item,
};
use tokio_xmpp::parsers::ns;
use tokio_xmpp::parsers::stanza_error::{DefinedCondition, StanzaError};

use self::command::{error, Action, Note, Request, RequestError, Response, Status, NS};
use self::sessions::{Missing, Session, Values};
use super::access::Permission;
use super::bot::{lock, Bot};

/// The commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// "Read sensors": choose sensors or a pattern → a table of readings.
    Read,
    /// "Statistics": choose a sensor, then a window → min, max, average, count, sparkline.
    Stats,
    /// "Set an alert": choose a sensor, then direction, threshold and margin.
    SetAlert,
    /// "My alerts": the contact's alerts, to remove some.
    MyAlerts,
    /// "Stale sensors": a table of the silent topics, at once.
    Stale,
}

impl Kind {
    /// Every command, in the order they are listed.
    pub const ALL: [Kind; 5] = [
        Kind::Read,
        Kind::Stats,
        Kind::SetAlert,
        Kind::MyAlerts,
        Kind::Stale,
    ];

    /// The disco node naming the command.
    pub fn node(self) -> &'static str {
        match self {
            Kind::Read => "read-sensors",
            Kind::Stats => "statistics",
            Kind::SetAlert => "set-alert",
            Kind::MyAlerts => "my-alerts",
            Kind::Stale => "stale-sensors",
        }
    }

    /// The name clients show.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Read => "Read sensors",
            Kind::Stats => "Statistics",
            Kind::SetAlert => "Set an alert",
            Kind::MyAlerts => "My alerts",
            Kind::Stale => "Stale sensors",
        }
    }

    fn from_node(node: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.node() == node)
    }

    /// Whether only contacts on the allow list may run it (as `stats` and `alert` in chat).
    fn needs_all(self) -> bool {
        matches!(self, Kind::Stats | Kind::SetAlert)
    }

    /// How many forms it shows before its result; 0 runs at once.
    pub fn stages(self) -> usize {
        match self {
            Kind::Stats | Kind::SetAlert => 2,
            Kind::Read | Kind::MyAlerts => 1,
            Kind::Stale => 0,
        }
    }

    /// The form of `stage`, filled with `values`, or the end when the command ends there.
    fn form(self, bot: &Bot, ctx: &Ctx, stage: usize, values: &Values) -> Step {
        match self {
            Kind::Read => Step::Form(read::form(bot, ctx, values)),
            Kind::Stats => Step::Form(stats::form(bot, stage, values)),
            Kind::SetAlert => Step::Form(alert::form(bot, stage, values)),
            Kind::MyAlerts => my_alerts::form(bot, ctx, values),
            Kind::Stale => Step::Done(stale::finish(bot, ctx)),
        }
    }

    /// Whether what was entered at `stage` can be used; `Err` with what is wrong.
    fn check(self, bot: &Bot, stage: usize, values: &Values) -> Result<(), String> {
        match self {
            Kind::Read => read::check(bot, values),
            Kind::Stats => stats::check(bot, stage, values),
            Kind::SetAlert => alert::check(bot, stage, values),
            Kind::MyAlerts | Kind::Stale => Ok(()),
        }
    }

    /// The result, from everything entered.
    fn finish(self, bot: &Bot, ctx: &Ctx, values: &Values) -> Finish {
        match self {
            Kind::Read => read::finish(bot, ctx, values),
            Kind::Stats => stats::finish(bot, ctx, values),
            Kind::SetAlert => alert::finish(bot, ctx, values),
            Kind::MyAlerts => my_alerts::finish(bot, ctx, values),
            Kind::Stale => stale::finish(bot, ctx),
        }
    }

    /// The actions offered at `stage` and the default one (§3.4): `next` until the last stage,
    /// then `complete`; `prev` after the first.
    fn actions(self, stage: usize) -> (Vec<Action>, Action) {
        let last = stage + 1 >= self.stages();
        let forward = if last { Action::Complete } else { Action::Next };
        let mut allowed = Vec::with_capacity(2);
        if stage > 0 {
            allowed.push(Action::Prev);
        }
        allowed.push(forward);
        (allowed, forward)
    }
}

/// Who asks, and when.
#[derive(Debug, Clone, Copy)]
pub struct Ctx<'a> {
    /// The contact's bare JID (alerts belong to it).
    pub contact: &'a str,
    /// The time.
    pub now: Instant,
}

/// What a command shows next: a form, or its end.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// A form to fill in.
    Form(DataForm),
    /// The command is over.
    Done(Finish),
}

/// How a command ends: a result form, notes, or both.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Finish {
    /// The result.
    pub form: Option<Element>,
    /// What to tell the requester.
    pub notes: Vec<Note>,
}

impl Finish {
    fn note(note: Note) -> Self {
        Self {
            form: None,
            notes: vec![note],
        }
    }
}

/// The sensor choice both statistics and alerts start with: a sensor from the list, or a
/// topic or pattern typed in.
fn target_fields(bot: &Bot, values: &Values) -> Vec<Field> {
    let options = bot
        .sensors
        .iter()
        .take(super::reply::MAX_LINES)
        .map(|s| {
            let label = if s.name == s.filter {
                s.name.clone()
            } else {
                format!("{} ({})", s.name, s.filter)
            };
            (s.name.clone(), label)
        })
        .collect();
    let chosen: Vec<String> = form::single(values, "sensor")
        .map(String::from)
        .or_else(|| Some(bot.sensors.default_sensor().name.clone()))
        .into_iter()
        .collect();
    let mut pattern = form::field("pattern", FieldType::TextSingle, "Or a topic or pattern");
    pattern.desc = Some("MQTT wildcards + and # allowed; overrides the sensor".into());
    pattern
        .values
        .extend(form::single(values, "pattern").map(String::from));
    vec![
        form::choice("sensor", FieldType::ListSingle, "Sensor", options, &chosen),
        pattern,
    ]
}

/// The sensor or pattern chosen with [`target_fields`].
fn target(values: &Values) -> Option<&str> {
    form::single(values, "pattern").or_else(|| form::single(values, "sensor"))
}

/// Whether [`target`] names something the bot can resolve.
fn check_target(bot: &Bot, values: &Values) -> Result<(), String> {
    let target = target(values).ok_or("Choose a sensor or type a topic.")?;
    bot.resolve(target).map(|_| ())
}

impl Bot {
    /// The answer to an IQ that is the ad-hoc commands' business (disco of the commands node
    /// or of a command, or a `<command/>`), or `None` when it is not theirs. `me` is the bot's
    /// own (full) JID, for the disco items.
    pub fn adhoc_iq(
        &self,
        from: &Jid,
        me: &Jid,
        payload: &Element,
        is_get: bool,
        now: Instant,
    ) -> Option<Result<Element, Box<StanzaError>>> {
        let contact = from.to_bare();
        let contact = contact.as_str();
        if is_get {
            if payload.is("query", ns::DISCO_ITEMS) {
                let query = DiscoItemsQuery::try_from(payload.clone()).ok()?;
                return (query.node.as_deref() == Some(NS))
                    .then(|| Ok(self.adhoc_items(contact, me).into()));
            }
            if payload.is("query", ns::DISCO_INFO) {
                let query = DiscoInfoQuery::try_from(payload.clone()).ok()?;
                let kind = Kind::from_node(query.node.as_deref()?)?;
                return Some(self.adhoc_info(contact, kind).map(Element::from));
            }
            return None;
        }
        if !payload.is("command", NS) {
            return None;
        }
        Some(
            self.adhoc_command(from.as_str(), contact, payload, now)
                .map(Element::from),
        )
    }

    /// Whether `contact` may run `kind`.
    fn may_run(&self, contact: &str, kind: Kind) -> bool {
        match self.access.permission(contact) {
            Permission::None => false,
            Permission::Read => !kind.needs_all(),
            Permission::All => true,
        }
    }

    /// §2.2: the commands `contact` may run, as items of `me`.
    fn adhoc_items(&self, contact: &str, me: &Jid) -> DiscoItemsResult {
        DiscoItemsResult {
            node: Some(NS.to_string()),
            items: Kind::ALL
                .into_iter()
                .filter(|kind| self.may_run(contact, *kind))
                .map(|kind| Item {
                    jid: me.clone(),
                    node: Some(kind.node().to_string()),
                    name: Some(kind.name().to_string()),
                })
                .collect(),
            rsm: None,
        }
    }

    /// §2.2: what one command is.
    fn adhoc_info(&self, contact: &str, kind: Kind) -> Result<DiscoInfoResult, Box<StanzaError>> {
        if !self.may_run(contact, kind) {
            return Err(forbidden());
        }
        Ok(DiscoInfoResult {
            node: Some(kind.node().to_string()),
            identities: vec![Identity::new(
                "automation",
                "command-node",
                "en",
                kind.name(),
            )],
            features: [NS, ns::DATA_FORMS].into_iter().map(String::from).collect(),
            extensions: Vec::new(),
        })
    }

    /// One `<command/>` from `owner` (full JID) of `contact` (bare JID).
    fn adhoc_command(
        &self,
        owner: &str,
        contact: &str,
        payload: &Element,
        now: Instant,
    ) -> Result<Response, Box<StanzaError>> {
        let request = Request::parse(payload).map_err(|problem| match problem {
            RequestError::NoNode => error(DefinedCondition::BadRequest, None, "no command node"),
            RequestError::MalformedAction => error(
                DefinedCondition::BadRequest,
                Some("malformed-action"),
                "unknown action",
            ),
            RequestError::BadPayload(why) => {
                error(DefinedCondition::BadRequest, Some("bad-payload"), why)
            }
        })?;
        let kind = Kind::from_node(&request.node).ok_or_else(|| {
            error(
                DefinedCondition::ItemNotFound,
                None,
                "no such command; list the commands again",
            )
        })?;
        if !self.may_run(contact, kind) {
            tracing::info!(contact, command = kind.node(), "refused an ad-hoc command");
            return Err(forbidden());
        }
        let permission = self.access.permission(contact);
        if self.admit_as(permission, contact, now).is_err() {
            return Err(error(
                DefinedCondition::ResourceConstraint,
                None,
                format!(
                    "too many requests: at most {} a minute",
                    self.settings.replies_per_minute
                ),
            ));
        }
        let ctx = Ctx { contact, now };
        match request.sessionid.clone() {
            None => self.adhoc_start(owner, kind, &request, &ctx),
            Some(id) => self.adhoc_step(owner, kind, id, &request, &ctx),
        }
    }

    /// A first request: the first form, or the result of a command without one.
    fn adhoc_start(
        &self,
        owner: &str,
        kind: Kind,
        request: &Request,
        ctx: &Ctx,
    ) -> Result<Response, Box<StanzaError>> {
        if request.action != Action::Execute {
            return Err(bad_action());
        }
        let values = Values::new();
        let form = match kind.form(self, ctx, 0, &values) {
            Step::Form(form) => form,
            // Commands without a form still get a session id (§4.1), never kept.
            Step::Done(finish) => return Ok(completed(kind, unkept_id(), finish)),
        };
        let session = Session::new(owner, ctx.contact, kind, ctx.now);
        let id = lock(&self.adhoc).open(session, ctx.now).ok_or_else(|| {
            error(
                DefinedCondition::ResourceConstraint,
                None,
                "too many open commands; try again in a few minutes",
            )
        })?;
        Ok(executing(kind, id, 0, form, Vec::new()))
    }

    /// A request in session `id`.
    fn adhoc_step(
        &self,
        owner: &str,
        kind: Kind,
        id: String,
        request: &Request,
        ctx: &Ctx,
    ) -> Result<Response, Box<StanzaError>> {
        let mut session = lock(&self.adhoc)
            .take(&id, owner, ctx.now)
            .map_err(|missing| match missing {
                Missing::Unknown => error(
                    DefinedCondition::BadRequest,
                    Some("bad-sessionid"),
                    "no such session; start the command again",
                ),
                Missing::Expired => error(
                    DefinedCondition::NotAllowed,
                    Some("session-expired"),
                    "the session expired; start the command again",
                ),
            })?;
        if session.kind != kind {
            lock(&self.adhoc).put(id, session, ctx.now);
            return Err(error(
                DefinedCondition::BadRequest,
                Some("bad-sessionid"),
                "that session is another command's",
            ));
        }
        let stage = session.stage;
        let (allowed, default) = kind.actions(stage);
        let canceled = request
            .form
            .as_ref()
            .is_some_and(|f| f.type_ == DataFormType::Cancel);
        let action = match request.action {
            _ if canceled => Action::Cancel,
            Action::Execute => default,
            other => other,
        };
        if action == Action::Cancel {
            // §2.4.3: canceled; the session is over (and said to be, §4.4).
            lock(&self.adhoc).end(id.clone(), owner);
            return Ok(Response {
                node: kind.node().to_string(),
                sessionid: id,
                status: Status::Canceled,
                actions: None,
                notes: Vec::new(),
                form: None,
            });
        }
        if !allowed.contains(&action) {
            lock(&self.adhoc).put(id, session, ctx.now);
            return Err(bad_action());
        }
        if action == Action::Prev {
            session.stage -= 1;
            return self.show(owner, kind, id, session, Vec::new(), ctx);
        }
        // Next or complete: take what this stage's form asked for.
        let shown = match kind.form(self, ctx, stage, &session.values) {
            Step::Form(form) => form,
            Step::Done(finish) => return Ok(self.complete(owner, kind, id, finish)),
        };
        let asked = form::vars(&shown);
        session.values.retain(|var, _| !asked.contains(var));
        if let Some(submitted) = &request.form {
            session.values.extend(form::submitted(submitted, &asked));
        }
        if let Err(problem) = kind.check(self, stage, &session.values) {
            return self.show(owner, kind, id, session, vec![Note::error(problem)], ctx);
        }
        if action == Action::Complete {
            let finish = kind.finish(self, ctx, &session.values);
            return Ok(self.complete(owner, kind, id, finish));
        }
        session.stage += 1;
        self.show(owner, kind, id, session, Vec::new(), ctx)
    }

    /// The session `id` completed: remembered as ended (§4.4), answered with `finish`.
    fn complete(&self, owner: &str, kind: Kind, id: String, finish: Finish) -> Response {
        lock(&self.adhoc).end(id.clone(), owner);
        completed(kind, id, finish)
    }

    /// Shows `session`'s current stage and keeps the session.
    fn show(
        &self,
        owner: &str,
        kind: Kind,
        id: String,
        session: Session,
        notes: Vec<Note>,
        ctx: &Ctx,
    ) -> Result<Response, Box<StanzaError>> {
        match kind.form(self, ctx, session.stage, &session.values) {
            Step::Form(form) => {
                let stage = session.stage;
                lock(&self.adhoc).put(id.clone(), session, ctx.now);
                Ok(executing(kind, id, stage, form, notes))
            }
            Step::Done(finish) => Ok(self.complete(owner, kind, id, finish)),
        }
    }
}

fn executing(kind: Kind, id: String, stage: usize, form: DataForm, notes: Vec<Note>) -> Response {
    Response {
        node: kind.node().to_string(),
        sessionid: id,
        status: Status::Executing,
        actions: Some(kind.actions(stage)),
        notes,
        form: Some(form.into()),
    }
}

fn completed(kind: Kind, id: String, finish: Finish) -> Response {
    Response {
        node: kind.node().to_string(),
        sessionid: id,
        status: Status::Completed,
        actions: None,
        notes: finish.notes,
        form: finish.form,
    }
}

fn forbidden() -> Box<StanzaError> {
    error(
        DefinedCondition::Forbidden,
        None,
        "this command is only for the contacts on the bot's allow list",
    )
}

fn bad_action() -> Box<StanzaError> {
    error(
        DefinedCondition::BadRequest,
        Some("bad-action"),
        "that action is not offered at this stage",
    )
}

/// An id for a command that completes at once.
fn unkept_id() -> String {
    format!("done-{:016x}", rand::random::<u64>())
}
