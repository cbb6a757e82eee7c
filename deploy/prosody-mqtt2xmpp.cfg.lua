-- Prosody settings for mqtt2xmpp: merge them into /etc/prosody/prosody.cfg.lua (global
-- section), next to your VirtualHost. The tests start every Prosody they use with exactly
-- these lines, so they are known to work with Prosody 0.12.
--
-- The bot logs in with SCRAM over STARTTLS (give it the server's certificate with --xmpp-ca if
-- it is self-signed) and needs roster, presence, ping and disco; chat clients also want
-- carbons, private storage (bookmarks) and offline messages.
authentication = "internal_hashed"
c2s_require_encryption = true
allow_registration = false
modules_enabled = { "roster", "saslauth", "tls", "disco", "ping", "private", "carbons", "offline" }
-- Accounts:  prosodyctl register bot example.org 'bot-password'
--            prosodyctl register alice example.org 'alice-password'
