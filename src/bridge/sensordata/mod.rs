//! XEP-0323 (Internet of Things – Sensor Data) read-out: the bot as a device whose nodes are
//! its MQTT topics.

pub mod types;
