//! The `help` command: every command with its Spanish name, and the sensors by name.

use crate::bridge::bot::Bot;
use crate::bridge::reply;

impl Bot {
    pub(super) fn help(&self) -> String {
        let default = &self.sensors.default_sensor().name;
        let names: Vec<&str> = self.sensors.iter().map(|s| s.name.as_str()).collect();
        format!(
            "Any other message gets the latest {default} reading. Commands (Spanish in brackets):\n\
             help [ayuda]: this list\n\
             list [lista]: every sensor, value and age\n\
             get <sensor or topic pattern> [ver]: e.g. get {default}, get building/+/temp, get building/#\n\
             stats <sensor> [window] [estadisticas]: min, max, average and a sparkline, e.g. stats {default} 30m\n\
             alert <sensor> above|below <value> [margin <m>] [alerta … encima|debajo]: tell me when it crosses\n\
             alerts [alertas]: your alerts\n\
             alert off [<sensor>] [alerta quitar]: remove your alerts (or unalert [<sensor>])\n\
             stale [inactivos]: sensors with no reading for over {}\n\
             Sensors: {}",
            reply::format_age(self.settings.stale_after),
            names.join(", ")
        )
    }
}
