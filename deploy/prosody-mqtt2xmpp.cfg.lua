-- Prosody settings for mqtt2xmpp: merge them into /etc/prosody/prosody.cfg.lua (global
-- section), next to your VirtualHost. The tests start every Prosody they use with exactly
-- these lines, so they are known to work with Prosody 0.12.
--
-- The bot logs in with SCRAM over STARTTLS (give it the server's certificate with --xmpp-ca if
-- it is self-signed) and needs roster, presence, ping and disco; chat clients also want
-- carbons, private storage (bookmarks) and offline messages. The bot's face in a contact's
-- roster (its nickname and avatar through PEP, its vCard with name, description and the same
-- avatar) needs "pep" and "vcard_legacy"; "adhoc" makes the server advertise ad-hoc commands,
-- without which some clients (profanity's /cmd) do not offer the bot's commands at all.
authentication = "internal_hashed"
c2s_require_encryption = true
allow_registration = false
modules_enabled = { "roster", "saslauth", "tls", "disco", "ping", "private", "carbons", "offline", "pep", "vcard_legacy", "adhoc" }
-- Accounts:  prosodyctl register bot example.org 'bot-password'
--            prosodyctl register alice example.org 'alice-password'
