#!/usr/bin/python3
"""The MQTT→XMPP bot people write today, for comparison with `mqtt2xmpp bridge` (bench/).

slixmpp + paho-mqtt (Debian: python3-slixmpp python3-paho-mqtt). It keeps the latest value of
every topic it sees and answers every chat message with the first topic's value and age.
"""
import argparse, json, signal, sys, time

import paho.mqtt.client as mqtt
import slixmpp

p = argparse.ArgumentParser()
p.add_argument('--jid', required=True)
p.add_argument('--password-file', required=True)
p.add_argument('--xmpp-server', required=True, help='HOST:PORT')
p.add_argument('--xmpp-ca', help="the server's certificate, if self-signed")
p.add_argument('--mqtt-host', default='127.0.0.1')
p.add_argument('--mqtt-port', type=int, default=1883)
p.add_argument('--topic', action='append', required=True, help='repeatable; the first answers')
args = p.parse_args()

cache = {}  # topic -> (value as published, time received)
accepted = 0


def on_connect(client, userdata, flags, rc):
    client.subscribe([(topic, 1) for topic in args.topic])


def on_message(client, userdata, msg):
    global accepted
    try:
        text = msg.payload.decode().strip()
        float(text)  # a plain number, kept as published
    except ValueError:
        try:
            text = str(float(json.loads(msg.payload)['value']))
        except (ValueError, KeyError, TypeError):
            return
    cache[msg.topic] = (text, time.monotonic())
    accepted += 1


class Bot(slixmpp.ClientXMPP):
    def __init__(self, jid, password):
        super().__init__(jid, password)
        self.add_event_handler('session_start', self.start)
        self.add_event_handler('message', self.answer)

    async def start(self, event):
        self.send_presence()
        await self.get_roster()

    def answer(self, msg):
        if msg['type'] not in ('chat', 'normal') or not msg['body']:
            return
        topic = args.topic[0]
        if topic in cache:
            value, at = cache[topic]
            msg.reply(f'{value} ({topic}, {time.monotonic() - at:.0f} s ago)').send()
        else:
            msg.reply(f'No reading from {topic} yet').send()


def stop(*_):
    print(f'bot stopped; MQTT payloads accepted={accepted}', flush=True)
    sys.exit(0)


signal.signal(signal.SIGTERM, stop)
signal.signal(signal.SIGINT, stop)
broker = mqtt.Client()
broker.on_connect, broker.on_message = on_connect, on_message
broker.connect(args.mqtt_host, args.mqtt_port)
broker.loop_start()
bot = Bot(args.jid, open(args.password_file).readline().strip())
bot.ca_certs = args.xmpp_ca
host, port = args.xmpp_server.rsplit(':', 1)
bot.connect((host, int(port)))
bot.process(forever=True)
