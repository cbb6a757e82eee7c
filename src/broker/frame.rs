//! Reading MQTT packets off a socket: whole frames only, with the size bound checked from the
//! header before the body is buffered, and the protocol level of a CONNECT read before parsing
//! (MQTT 5 and 3.1 lay it out differently).

use bytes::BytesMut;
use rumqttc::mqttbytes::v4::Packet;
use rumqttc::mqttbytes::{check, Error as CodecError};
use tokio::io::AsyncReadExt;
use tokio::net::tcp::OwnedReadHalf;

/// Why reading a packet failed.
#[derive(Debug)]
pub(crate) enum ReadError {
    Closed,
    Io(std::io::Error),
    Codec(CodecError),
}

/// Reads one packet, buffering at most `max_packet` (plus its header) in `buf`. Cancel-safe:
/// nothing is lost if the future is dropped between packets.
pub(crate) async fn read_packet(
    reader: &mut OwnedReadHalf,
    buf: &mut BytesMut,
    max_packet: usize,
) -> Result<Packet, ReadError> {
    read_frame(reader, buf, max_packet).await?;
    Packet::read(buf, max_packet).map_err(ReadError::Codec)
}

/// Reads until `buf` starts with a whole packet, refusing one over `max_packet` from its header
/// alone. Cancel-safe.
pub(crate) async fn read_frame(
    reader: &mut OwnedReadHalf,
    buf: &mut BytesMut,
    max_packet: usize,
) -> Result<(), ReadError> {
    loop {
        match check(buf.iter(), max_packet) {
            Ok(_) => return Ok(()),
            Err(CodecError::InsufficientBytes(missing)) => {
                // `missing` is bounded: `check` already refused lengths over `max_packet`.
                buf.reserve(missing.max(1024));
                match reader.read_buf(buf).await {
                    Ok(0) => return Err(ReadError::Closed),
                    Ok(_) => {}
                    Err(e) => return Err(ReadError::Io(e)),
                }
            }
            Err(e) => return Err(ReadError::Codec(e)),
        }
    }
}

/// The protocol level of the CONNECT packet that `frame` starts with, read without parsing the
/// rest, whose layout differs between MQTT versions (MQTT 5 adds properties).
pub(crate) fn connect_level(frame: &[u8]) -> Option<u8> {
    if frame.first()? >> 4 != 1 {
        return None;
    }
    // The remaining length takes 1 to 4 bytes; the last one has no continuation bit.
    let length_bytes = frame.get(1..)?.iter().take(4).position(|b| b & 0x80 == 0)? + 1;
    let variable_header = frame.get(1 + length_bytes..)?;
    let name = usize::from(u16::from_be_bytes([
        *variable_header.first()?,
        *variable_header.get(1)?,
    ]));
    variable_header.get(2 + name).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_protocol_level_is_read_from_any_connect() {
        let v311 = [
            0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 1, 0, 1, b'k',
        ];
        assert_eq!(connect_level(&v311), Some(4));
        let v31 = [
            0x10, 14, 0, 6, b'M', b'Q', b'I', b's', b'd', b'p', 3, 2, 0, 1,
        ];
        assert_eq!(connect_level(&v31), Some(3));
        assert_eq!(
            connect_level(&[0x10, 0x80, 0x01, 0, 4, 0, 0, 0, 0, 5]),
            Some(5)
        );
        for garbage in [
            &[][..],
            &[0x10],
            &[0x10, 0xff, 0xff, 0xff, 0xff],
            &[0x30, 2, 0, 0],
        ] {
            assert_eq!(connect_level(garbage), None, "{garbage:?}");
        }
    }
}
