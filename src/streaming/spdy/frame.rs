//! SPDY/3.1 frame codec: the binary layouts of "SPDY Protocol - Draft 3.1" §2.2 (frame header) and
//! §2.6 (control frames), plus the zlib-compressed name/value header blocks of §2.6.10.
//!
//! Header compression is stateful: one zlib deflate context per direction for the whole connection,
//! flushed with a sync flush after every header block, and one inflate context per direction
//! (§2.6.10.1). That is why [`Encoder`] and [`Decoder`] are long-lived values owned by the session's
//! writer and reader respectively, and why frames must be encoded in exactly the order they are sent.
//!
//! Decoding is incremental ([`Decoder::decode`] returns `Ok(None)` until a whole frame is buffered),
//! bounded ([`Limits`]: the frame size is checked from the 8-byte header, before the payload is
//! buffered, and the inflated header block is capped), and total: any input yields a frame, `None`
//! or a [`FrameError`], never a panic.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// Header name/value pairs. Names are lower-case on the wire (§2.6.10); several values of one name
/// travel as a single NUL-separated value and are split back into separate pairs on decode.
pub type Headers = Vec<(String, String)>;

/// The only protocol version this codec speaks (the control-frame version field, §2.2.1).
pub const VERSION: u16 = 3;

/// Largest payload the 24-bit length field can carry (§2.2).
pub const MAX_PAYLOAD_LEN: usize = 0x00FF_FFFF;

/// Largest stream id / window / delta: 31 bits (§2.2.2, §2.6.8).
pub const MAX_STREAM_ID: u32 = 0x7FFF_FFFF;

/// FLAG_FIN on DATA, SYN_STREAM, SYN_REPLY and HEADERS frames.
pub const FLAG_FIN: u8 = 0x01;
/// FLAG_UNIDIRECTIONAL on SYN_STREAM (§2.6.1).
pub const FLAG_UNIDIRECTIONAL: u8 = 0x02;
/// FLAG_SETTINGS_CLEAR_SETTINGS on SETTINGS (§2.6.4).
pub const FLAG_SETTINGS_CLEAR: u8 = 0x01;

/// SETTINGS id 7, SETTINGS_INITIAL_WINDOW_SIZE (§2.6.4).
pub const SETTINGS_INITIAL_WINDOW_SIZE: u32 = 7;
/// SETTINGS id 4, SETTINGS_MAX_CONCURRENT_STREAMS (§2.6.4).
pub const SETTINGS_MAX_CONCURRENT_STREAMS: u32 = 4;

const TYPE_SYN_STREAM: u16 = 1;
const TYPE_SYN_REPLY: u16 = 2;
const TYPE_RST_STREAM: u16 = 3;
const TYPE_SETTINGS: u16 = 4;
const TYPE_PING: u16 = 6;
const TYPE_GOAWAY: u16 = 7;
const TYPE_HEADERS: u16 = 8;
const TYPE_WINDOW_UPDATE: u16 = 9;

const HEADER_LEN: usize = 8;

/// RST_STREAM status codes (§2.6.3; 3.1 keeps 1–9 and 11, 10 is unused in 3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RstStatus {
    ProtocolError,
    InvalidStream,
    RefusedStream,
    UnsupportedVersion,
    Cancel,
    InternalError,
    FlowControlError,
    StreamInUse,
    StreamAlreadyClosed,
    InvalidCredentials,
    FrameTooLarge,
    /// A non-zero code this implementation does not know; kept so it can be reported.
    Other(u32),
}

impl RstStatus {
    pub fn code(self) -> u32 {
        match self {
            RstStatus::ProtocolError => 1,
            RstStatus::InvalidStream => 2,
            RstStatus::RefusedStream => 3,
            RstStatus::UnsupportedVersion => 4,
            RstStatus::Cancel => 5,
            RstStatus::InternalError => 6,
            RstStatus::FlowControlError => 7,
            RstStatus::StreamInUse => 8,
            RstStatus::StreamAlreadyClosed => 9,
            RstStatus::InvalidCredentials => 10,
            RstStatus::FrameTooLarge => 11,
            RstStatus::Other(code) => code,
        }
    }

    /// Status 0 is not a valid RST_STREAM status (§2.6.3 lists 1..); the caller rejects it.
    pub fn from_code(code: u32) -> RstStatus {
        match code {
            1 => RstStatus::ProtocolError,
            2 => RstStatus::InvalidStream,
            3 => RstStatus::RefusedStream,
            4 => RstStatus::UnsupportedVersion,
            5 => RstStatus::Cancel,
            6 => RstStatus::InternalError,
            7 => RstStatus::FlowControlError,
            8 => RstStatus::StreamInUse,
            9 => RstStatus::StreamAlreadyClosed,
            10 => RstStatus::InvalidCredentials,
            11 => RstStatus::FrameTooLarge,
            other => RstStatus::Other(other),
        }
    }
}

impl std::fmt::Display for RstStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?} ({})", self, self.code())
    }
}

/// GOAWAY status codes (§2.6.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GoAwayStatus {
    Ok,
    ProtocolError,
    InternalError,
    Other(u32),
}

impl GoAwayStatus {
    pub fn code(self) -> u32 {
        match self {
            GoAwayStatus::Ok => 0,
            GoAwayStatus::ProtocolError => 1,
            GoAwayStatus::InternalError => 2,
            GoAwayStatus::Other(code) => code,
        }
    }

    pub fn from_code(code: u32) -> GoAwayStatus {
        match code {
            0 => GoAwayStatus::Ok,
            1 => GoAwayStatus::ProtocolError,
            2 => GoAwayStatus::InternalError,
            other => GoAwayStatus::Other(other),
        }
    }
}

/// One SETTINGS entry (§2.6.4): 8-bit flags, 24-bit id, 32-bit value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    pub flags: u8,
    pub id: u32,
    pub value: u32,
}

/// A decoded frame. Header blocks are already inflated and parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Data {
        stream_id: u32,
        fin: bool,
        data: Bytes,
    },
    SynStream {
        stream_id: u32,
        associated_stream_id: u32,
        /// 3-bit priority, 0 highest.
        priority: u8,
        slot: u8,
        fin: bool,
        unidirectional: bool,
        headers: Headers,
    },
    SynReply {
        stream_id: u32,
        fin: bool,
        headers: Headers,
    },
    RstStream {
        stream_id: u32,
        status: RstStatus,
    },
    Settings {
        clear: bool,
        entries: Vec<Setting>,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_good_stream_id: u32,
        status: GoAwayStatus,
    },
    Headers {
        stream_id: u32,
        fin: bool,
        headers: Headers,
    },
    /// Stream id 0 addresses the session window (new in 3.1, §2.6.8).
    WindowUpdate {
        stream_id: u32,
        delta: u32,
    },
    /// A control frame of a type this codec does not know (e.g. 3.0's CREDENTIAL). §2.2.1 says a
    /// receiver must ignore such frames; it is surfaced only so callers can log it. Never encoded.
    Unknown {
        frame_type: u16,
        flags: u8,
        length: u32,
    },
}

/// Malformed or oversized input. Every variant is fatal for the connection: a header block that
/// failed to inflate leaves the shared zlib context unusable, and the Go peer treats the same
/// conditions as fatal too.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame payload of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge { len: usize, max: usize },
    #[error("unsupported SPDY version {0} (only 3 is spoken)")]
    UnsupportedVersion(u16),
    #[error("{frame} frame has invalid length {len}")]
    InvalidLength { frame: &'static str, len: usize },
    #[error("{0} frame carries stream id 0")]
    ZeroStreamId(&'static str),
    #[error("RST_STREAM with invalid status code 0")]
    InvalidRstStatus,
    #[error("header block compression failed: {0}")]
    Compression(String),
    #[error("malformed header block: {0}")]
    HeaderBlock(&'static str),
    #[error("inflated header block exceeds {max} bytes")]
    HeaderBlockTooLarge { max: usize },
    #[error("header block has {count} pairs, more than the limit of {max}")]
    TooManyHeaders { count: usize, max: usize },
    #[error("cannot encode: {0}")]
    Unencodable(&'static str),
}

/// Input bounds for [`Decoder`]. The defaults accept anything a `moby/spdystream` peer produces:
/// it writes one DATA frame per `Write` call of whatever size (bounded only by the 24-bit field),
/// and caps header fields at 1 MiB and header counts at 1000 on its own side.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest accepted control-frame payload (compressed header blocks live here).
    pub max_control_payload: usize,
    /// Largest accepted DATA payload.
    pub max_data_payload: usize,
    /// Largest inflated header block.
    pub max_header_block: usize,
    /// Most name/value pairs in one header block.
    pub max_header_count: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_control_payload: 1 << 20,
            max_data_payload: MAX_PAYLOAD_LEN,
            max_header_block: 1 << 20,
            max_header_count: 1000,
        }
    }
}

/// The SPDY/3 zlib dictionary, §2.6.10.1 of the spec, written here structurally rather than as a
/// hex dump: a run of 32-bit-length-prefixed tokens followed by one raw tail. The result must be
/// byte-exact (1423 bytes) or the peer's inflate rejects our blocks; the tests check the length and
/// the Adler-32 that zlib sends as the dictionary id.
const DICTIONARY_PREFIXED: &[&str] = &[
    "options",
    "head",
    "post",
    "put",
    "delete",
    "trace",
    "accept",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "accept-ranges",
    "age",
    "allow",
    "authorization",
    "cache-control",
    "connection",
    "content-base",
    "content-encoding",
    "content-language",
    "content-length",
    "content-location",
    "content-md5",
    "content-range",
    "content-type",
    "date",
    "etag",
    "expect",
    "expires",
    "from",
    "host",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "last-modified",
    "location",
    "max-forwards",
    "pragma",
    "proxy-authenticate",
    "proxy-authorization",
    "range",
    "referer",
    "retry-after",
    "server",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "user-agent",
    "vary",
    "via",
    "warning",
    "www-authenticate",
    "method",
    "get",
    "status",
    "200 OK",
    "version",
    "HTTP/1.1",
    "url",
    "public",
    "set-cookie",
    "keep-alive",
    "origin",
];

const DICTIONARY_TAIL: &str = concat!(
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505",
    "203 Non-Authoritative Information",
    "204 No Content",
    "301 Moved Permanently",
    "400 Bad Request",
    "401 Unauthorized",
    "403 Forbidden",
    "404 Not Found",
    "500 Internal Server Error",
    "501 Not Implemented",
    "503 Service Unavailable",
    "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 ",
    "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT",
    "chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,",
    "text/plain,text/javascript,publicprivatemax-age=gzip,deflate,sdch",
    "charset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
);

/// Builds the byte-exact SPDY/3 header dictionary.
pub fn dictionary() -> Vec<u8> {
    let mut dict = Vec::with_capacity(1423);
    for token in DICTIONARY_PREFIXED {
        dict.extend_from_slice(&(token.len() as u32).to_be_bytes());
        dict.extend_from_slice(token.as_bytes());
    }
    dict.extend_from_slice(DICTIONARY_TAIL.as_bytes());
    dict
}

fn compression_error(e: impl std::fmt::Display) -> FrameError {
    FrameError::Compression(e.to_string())
}

/// Serialises frames; owns the connection's outbound deflate context.
pub struct Encoder {
    deflate: Compress,
}

impl Encoder {
    pub fn new() -> Result<Encoder, FrameError> {
        let mut deflate = Compress::new(Compression::default(), true);
        // A zlib stream with a preset dictionary: the header carries FDICT and the dictionary's
        // Adler-32, which the peer's inflate checks (§2.6.10.1).
        deflate
            .set_dictionary(&dictionary())
            .map_err(compression_error)?;
        Ok(Encoder { deflate })
    }

    /// Appends the wire form of `frame` to `dst`. On error nothing is appended, but a header block
    /// that failed mid-compression leaves the deflate context unusable: treat it as fatal.
    pub fn encode(&mut self, frame: &Frame, dst: &mut BytesMut) -> Result<(), FrameError> {
        match frame {
            Frame::Data {
                stream_id,
                fin,
                data,
            } => {
                if data.len() > MAX_PAYLOAD_LEN {
                    return Err(FrameError::Unencodable("DATA payload longer than 2^24-1"));
                }
                dst.reserve(HEADER_LEN + data.len());
                dst.put_u32(stream_id & MAX_STREAM_ID);
                dst.put_u32(length_word(flag(*fin, FLAG_FIN), data.len()));
                dst.put_slice(data);
                Ok(())
            }
            Frame::SynStream {
                stream_id,
                associated_stream_id,
                priority,
                slot,
                fin,
                unidirectional,
                headers,
            } => {
                let block = self.compress_headers(headers)?;
                let flags = flag(*fin, FLAG_FIN) | flag(*unidirectional, FLAG_UNIDIRECTIONAL);
                let mut body = Vec::with_capacity(10 + block.len());
                body.extend_from_slice(&(stream_id & MAX_STREAM_ID).to_be_bytes());
                body.extend_from_slice(&(associated_stream_id & MAX_STREAM_ID).to_be_bytes());
                body.push((priority & 0x07) << 5);
                body.push(*slot);
                body.extend_from_slice(&block);
                put_control(dst, TYPE_SYN_STREAM, flags, &body)
            }
            Frame::SynReply {
                stream_id,
                fin,
                headers,
            } => self.encode_stream_headers(dst, TYPE_SYN_REPLY, *stream_id, *fin, headers),
            Frame::Headers {
                stream_id,
                fin,
                headers,
            } => self.encode_stream_headers(dst, TYPE_HEADERS, *stream_id, *fin, headers),
            Frame::RstStream { stream_id, status } => {
                let mut body = [0u8; 8];
                body[..4].copy_from_slice(&(stream_id & MAX_STREAM_ID).to_be_bytes());
                body[4..].copy_from_slice(&status.code().to_be_bytes());
                put_control(dst, TYPE_RST_STREAM, 0, &body)
            }
            Frame::Settings { clear, entries } => {
                let mut body = Vec::with_capacity(4 + 8 * entries.len());
                body.extend_from_slice(&(entries.len() as u32).to_be_bytes());
                for entry in entries {
                    let id_word = (u32::from(entry.flags) << 24) | (entry.id & 0x00FF_FFFF);
                    body.extend_from_slice(&id_word.to_be_bytes());
                    body.extend_from_slice(&entry.value.to_be_bytes());
                }
                put_control(dst, TYPE_SETTINGS, flag(*clear, FLAG_SETTINGS_CLEAR), &body)
            }
            Frame::Ping { id } => put_control(dst, TYPE_PING, 0, &id.to_be_bytes()),
            Frame::GoAway {
                last_good_stream_id,
                status,
            } => {
                let mut body = [0u8; 8];
                body[..4].copy_from_slice(&(last_good_stream_id & MAX_STREAM_ID).to_be_bytes());
                body[4..].copy_from_slice(&status.code().to_be_bytes());
                put_control(dst, TYPE_GOAWAY, 0, &body)
            }
            Frame::WindowUpdate { stream_id, delta } => {
                let mut body = [0u8; 8];
                body[..4].copy_from_slice(&(stream_id & MAX_STREAM_ID).to_be_bytes());
                body[4..].copy_from_slice(&(delta & MAX_STREAM_ID).to_be_bytes());
                put_control(dst, TYPE_WINDOW_UPDATE, 0, &body)
            }
            Frame::Unknown { .. } => Err(FrameError::Unencodable("unknown control frame type")),
        }
    }

    fn encode_stream_headers(
        &mut self,
        dst: &mut BytesMut,
        frame_type: u16,
        stream_id: u32,
        fin: bool,
        headers: &Headers,
    ) -> Result<(), FrameError> {
        let block = self.compress_headers(headers)?;
        let mut body = Vec::with_capacity(4 + block.len());
        body.extend_from_slice(&(stream_id & MAX_STREAM_ID).to_be_bytes());
        body.extend_from_slice(&block);
        put_control(dst, frame_type, flag(fin, FLAG_FIN), &body)
    }

    /// Serialises and deflates one header block on the shared context, ending with a sync flush so
    /// the peer can inflate it without waiting for later blocks.
    pub fn compress_headers(&mut self, headers: &Headers) -> Result<Vec<u8>, FrameError> {
        let plain = serialize_header_block(headers)?;
        let mut out = Vec::with_capacity(plain.len() / 2 + 64);
        let mut consumed = 0usize;
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(plain.len() - consumed + 64);
            }
            let before_in = self.deflate.total_in();
            let before_out = out.len();
            self.deflate
                .compress_vec(&plain[consumed..], &mut out, FlushCompress::Sync)
                .map_err(compression_error)?;
            consumed += (self.deflate.total_in() - before_in) as usize;
            // zlib's sync flush is complete once all input is consumed and output space is left.
            if consumed == plain.len() && out.len() < out.capacity() {
                break;
            }
            if self.deflate.total_in() == before_in && out.len() == before_out {
                if consumed == plain.len() {
                    break;
                }
                return Err(FrameError::Compression("deflate made no progress".into()));
            }
        }
        Ok(out)
    }
}

fn flag(set: bool, bit: u8) -> u8 {
    if set {
        bit
    } else {
        0
    }
}

fn length_word(flags: u8, len: usize) -> u32 {
    (u32::from(flags) << 24) | (len as u32 & 0x00FF_FFFF)
}

fn put_control(
    dst: &mut BytesMut,
    frame_type: u16,
    flags: u8,
    body: &[u8],
) -> Result<(), FrameError> {
    if body.len() > MAX_PAYLOAD_LEN {
        return Err(FrameError::Unencodable(
            "control frame payload longer than 2^24-1",
        ));
    }
    dst.reserve(HEADER_LEN + body.len());
    dst.put_u32(0x8000_0000 | (u32::from(VERSION) << 16) | u32::from(frame_type));
    dst.put_u32(length_word(flags, body.len()));
    dst.put_slice(body);
    Ok(())
}

/// The uncompressed v3 name/value block (§2.6.10): a 32-bit pair count, then for each pair a
/// 32-bit name length, the name, a 32-bit value length and the value. Names are lower-cased and
/// repeated names merged into one NUL-separated value, because the spec forbids duplicate names and
/// the Go peer's framer fails the whole connection on duplicate or upper-case names.
pub fn serialize_header_block(headers: &Headers) -> Result<Vec<u8>, FrameError> {
    let mut merged: Vec<(String, String)> = Vec::with_capacity(headers.len());
    for (name, value) in headers {
        let name = name.to_ascii_lowercase();
        if name.is_empty() {
            return Err(FrameError::Unencodable("empty header name"));
        }
        match merged.iter_mut().find(|(existing, _)| *existing == name) {
            Some((_, existing_value)) => {
                existing_value.push('\0');
                existing_value.push_str(value);
            }
            None => merged.push((name, value.clone())),
        }
    }
    let mut out = Vec::new();
    out.extend_from_slice(&(merged.len() as u32).to_be_bytes());
    for (name, value) in &merged {
        let name_len = u32::try_from(name.len())
            .map_err(|_| FrameError::Unencodable("header name too long"))?;
        let value_len = u32::try_from(value.len())
            .map_err(|_| FrameError::Unencodable("header value too long"))?;
        out.extend_from_slice(&name_len.to_be_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&value_len.to_be_bytes());
        out.extend_from_slice(value.as_bytes());
    }
    Ok(out)
}

/// Parses an uncompressed name/value block (see [`serialize_header_block`]).
pub fn parse_header_block(mut block: &[u8], max_count: usize) -> Result<Headers, FrameError> {
    let count =
        take_u32(&mut block).ok_or(FrameError::HeaderBlock("truncated pair count"))? as usize;
    if count > max_count {
        return Err(FrameError::TooManyHeaders {
            count,
            max: max_count,
        });
    }
    let mut headers = Headers::with_capacity(count);
    for _ in 0..count {
        let name = take_string(&mut block, "name")?;
        if name.is_empty() {
            return Err(FrameError::HeaderBlock("zero-length header name"));
        }
        let value = take_string(&mut block, "value")?;
        let name = name.to_ascii_lowercase();
        for part in value.split('\0') {
            headers.push((name.clone(), part.to_string()));
        }
    }
    if !block.is_empty() {
        return Err(FrameError::HeaderBlock(
            "trailing bytes after the last pair",
        ));
    }
    Ok(headers)
}

fn take_u32(block: &mut &[u8]) -> Option<u32> {
    if block.len() < 4 {
        return None;
    }
    let value = u32::from_be_bytes([block[0], block[1], block[2], block[3]]);
    *block = &block[4..];
    Some(value)
}

fn take_string(block: &mut &[u8], what: &'static str) -> Result<String, FrameError> {
    let len = take_u32(block).ok_or(FrameError::HeaderBlock(match what {
        "name" => "truncated name length",
        _ => "truncated value length",
    }))? as usize;
    if block.len() < len {
        return Err(FrameError::HeaderBlock(match what {
            "name" => "name longer than the block",
            _ => "value longer than the block",
        }));
    }
    let (bytes, rest) = block.split_at(len);
    *block = rest;
    String::from_utf8(bytes.to_vec()).map_err(|_| FrameError::HeaderBlock("header is not UTF-8"))
}

/// Parses frames out of a receive buffer; owns the connection's inbound inflate context.
pub struct Decoder {
    inflate: Decompress,
    limits: Limits,
    dictionary: Vec<u8>,
}

impl Decoder {
    pub fn new(limits: Limits) -> Decoder {
        Decoder {
            inflate: Decompress::new(true),
            limits,
            dictionary: dictionary(),
        }
    }

    /// Removes and returns one frame from the front of `buf`, or `Ok(None)` if `buf` does not yet
    /// hold a whole frame. Oversized frames are rejected from their header alone, so a peer cannot
    /// make us buffer more than the limit.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        if buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let word = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
        let flags = buf[4];
        let len = (usize::from(buf[5]) << 16) | (usize::from(buf[6]) << 8) | usize::from(buf[7]);
        let control = word & 0x8000_0000 != 0;
        let max = if control {
            self.limits.max_control_payload
        } else {
            self.limits.max_data_payload
        };
        if len > max {
            return Err(FrameError::FrameTooLarge { len, max });
        }
        if control {
            let version = ((word >> 16) & 0x7FFF) as u16;
            if version != VERSION {
                return Err(FrameError::UnsupportedVersion(version));
            }
        }
        if buf.len() < HEADER_LEN + len {
            buf.reserve(HEADER_LEN + len - buf.len());
            return Ok(None);
        }
        buf.advance(HEADER_LEN);
        let payload = buf.split_to(len).freeze();
        if !control {
            let stream_id = word & MAX_STREAM_ID;
            if stream_id == 0 {
                return Err(FrameError::ZeroStreamId("DATA"));
            }
            return Ok(Some(Frame::Data {
                stream_id,
                fin: flags & FLAG_FIN != 0,
                data: payload,
            }));
        }
        let frame_type = (word & 0xFFFF) as u16;
        self.decode_control(frame_type, flags, &payload).map(Some)
    }

    fn decode_control(
        &mut self,
        frame_type: u16,
        flags: u8,
        p: &[u8],
    ) -> Result<Frame, FrameError> {
        let fin = flags & FLAG_FIN != 0;
        match frame_type {
            TYPE_SYN_STREAM => {
                require_len(p, 10, "SYN_STREAM", false)?;
                let stream_id = stream_id_at(p, 0, "SYN_STREAM")?;
                let headers = self.inflate_headers(&p[10..])?;
                Ok(Frame::SynStream {
                    stream_id,
                    associated_stream_id: be32(p, 4) & MAX_STREAM_ID,
                    priority: p[8] >> 5,
                    slot: p[9],
                    fin,
                    unidirectional: flags & FLAG_UNIDIRECTIONAL != 0,
                    headers,
                })
            }
            TYPE_SYN_REPLY => {
                require_len(p, 4, "SYN_REPLY", false)?;
                let stream_id = stream_id_at(p, 0, "SYN_REPLY")?;
                let headers = self.inflate_headers(&p[4..])?;
                Ok(Frame::SynReply {
                    stream_id,
                    fin,
                    headers,
                })
            }
            TYPE_HEADERS => {
                require_len(p, 4, "HEADERS", false)?;
                let stream_id = stream_id_at(p, 0, "HEADERS")?;
                let headers = self.inflate_headers(&p[4..])?;
                Ok(Frame::Headers {
                    stream_id,
                    fin,
                    headers,
                })
            }
            TYPE_RST_STREAM => {
                require_len(p, 8, "RST_STREAM", true)?;
                let stream_id = stream_id_at(p, 0, "RST_STREAM")?;
                let code = be32(p, 4);
                if code == 0 {
                    return Err(FrameError::InvalidRstStatus);
                }
                Ok(Frame::RstStream {
                    stream_id,
                    status: RstStatus::from_code(code),
                })
            }
            TYPE_SETTINGS => {
                require_len(p, 4, "SETTINGS", false)?;
                let count = be32(p, 0) as usize;
                // Exact length check without overflow: 4 + 8 * count == len.
                if count.checked_mul(8) != Some(p.len() - 4) {
                    return Err(FrameError::InvalidLength {
                        frame: "SETTINGS",
                        len: p.len(),
                    });
                }
                let entries = p[4..]
                    .chunks_exact(8)
                    .map(|entry| Setting {
                        flags: entry[0],
                        id: be32(entry, 0) & 0x00FF_FFFF,
                        value: be32(entry, 4),
                    })
                    .collect();
                Ok(Frame::Settings {
                    clear: flags & FLAG_SETTINGS_CLEAR != 0,
                    entries,
                })
            }
            TYPE_PING => {
                require_len(p, 4, "PING", true)?;
                Ok(Frame::Ping { id: be32(p, 0) })
            }
            TYPE_GOAWAY => {
                require_len(p, 8, "GOAWAY", true)?;
                Ok(Frame::GoAway {
                    last_good_stream_id: be32(p, 0) & MAX_STREAM_ID,
                    status: GoAwayStatus::from_code(be32(p, 4)),
                })
            }
            TYPE_WINDOW_UPDATE => {
                require_len(p, 8, "WINDOW_UPDATE", true)?;
                Ok(Frame::WindowUpdate {
                    stream_id: be32(p, 0) & MAX_STREAM_ID,
                    delta: be32(p, 4) & MAX_STREAM_ID,
                })
            }
            other => Ok(Frame::Unknown {
                frame_type: other,
                flags,
                length: p.len() as u32,
            }),
        }
    }

    /// Inflates one header block on the shared context and parses it.
    pub fn inflate_headers(&mut self, compressed: &[u8]) -> Result<Headers, FrameError> {
        let plain = self.inflate_block(compressed)?;
        parse_header_block(&plain, self.limits.max_header_count)
    }

    fn inflate_block(&mut self, input: &[u8]) -> Result<Vec<u8>, FrameError> {
        let max = self.limits.max_header_block;
        let mut out: Vec<u8> = Vec::with_capacity((input.len() * 4 + 64).min(max + 1));
        let mut consumed = 0usize;
        loop {
            if out.len() == out.capacity() {
                if out.len() > max {
                    return Err(FrameError::HeaderBlockTooLarge { max });
                }
                let grow = out.capacity().max(256).min(max + 1 - out.len());
                out.reserve(grow);
            }
            let before_in = self.inflate.total_in();
            let before_out = out.len();
            let result =
                self.inflate
                    .decompress_vec(&input[consumed..], &mut out, FlushDecompress::Sync);
            consumed += (self.inflate.total_in() - before_in) as usize;
            let progressed = out.len() != before_out || self.inflate.total_in() != before_in;
            match result {
                Ok(Status::StreamEnd) => break,
                Ok(Status::Ok) | Ok(Status::BufError) => {
                    if consumed == input.len() && (out.len() < out.capacity() || !progressed) {
                        break;
                    }
                    if !progressed && out.len() < out.capacity() {
                        return Err(FrameError::Compression("inflate made no progress".into()));
                    }
                }
                Err(e) => {
                    if e.needs_dictionary().is_some() {
                        self.inflate
                            .set_dictionary(&self.dictionary)
                            .map_err(compression_error)?;
                    } else {
                        return Err(compression_error(e));
                    }
                }
            }
        }
        if out.len() > max {
            return Err(FrameError::HeaderBlockTooLarge { max });
        }
        Ok(out)
    }
}

fn be32(p: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([p[at], p[at + 1], p[at + 2], p[at + 3]])
}

fn require_len(p: &[u8], len: usize, frame: &'static str, exact: bool) -> Result<(), FrameError> {
    let ok = if exact {
        p.len() == len
    } else {
        p.len() >= len
    };
    if ok {
        Ok(())
    } else {
        Err(FrameError::InvalidLength {
            frame,
            len: p.len(),
        })
    }
}

fn stream_id_at(p: &[u8], at: usize, frame: &'static str) -> Result<u32, FrameError> {
    let id = be32(p, at) & MAX_STREAM_ID;
    if id == 0 {
        Err(FrameError::ZeroStreamId(frame))
    } else {
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(frame: &Frame) -> Vec<u8> {
        let mut enc = Encoder::new().expect("encoder");
        let mut out = BytesMut::new();
        enc.encode(frame, &mut out).expect("encode");
        out.to_vec()
    }

    fn decode_one(bytes: &[u8]) -> Result<Option<Frame>, FrameError> {
        let mut dec = Decoder::new(Limits::default());
        let mut buf = BytesMut::from(bytes);
        dec.decode(&mut buf)
    }

    fn h(pairs: &[(&str, &str)]) -> Headers {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    }

    /// Checks both directions against a layout written out by hand from the spec.
    fn assert_layout(frame: Frame, wire: &[u8]) {
        assert_eq!(encode(&frame), wire, "encoding of {frame:?}");
        assert_eq!(decode_one(wire), Ok(Some(frame)));
    }

    #[test]
    fn dictionary_is_the_spdy3_dictionary() {
        let dict = dictionary();
        assert_eq!(dict.len(), 1423);
        // zlib carries the dictionary's Adler-32 as DICTID; 0xe3c6a7c2 is the value SPDY/3 peers
        // expect (it is also bytes 2..6 of every first header block, see the fixture below).
        let (mut a, mut b) = (1u32, 0u32);
        for byte in &dict {
            a = (a + u32::from(*byte)) % 65521;
            b = (b + a) % 65521;
        }
        assert_eq!((b << 16) | a, 0xe3c6_a7c2);
        assert_eq!(&dict[..11], b"\x00\x00\x00\x07options");
        assert!(dict.ends_with(b",enq=0."));
    }

    #[test]
    fn data_frame_layout() {
        // |0| stream 5 (31) | flags FIN | length 2 | "hi"
        assert_layout(
            Frame::Data {
                stream_id: 5,
                fin: true,
                data: Bytes::from_static(b"hi"),
            },
            &[0x00, 0x00, 0x00, 0x05, 0x01, 0x00, 0x00, 0x02, b'h', b'i'],
        );
        assert_layout(
            Frame::Data {
                stream_id: 0x7fff_ffff,
                fin: false,
                data: Bytes::new(),
            },
            &[0x7f, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00],
        );
    }

    #[test]
    fn rst_stream_layout() {
        // |1| version 3 | type 3 | flags 0 | length 8 | stream 3 | status 5 (CANCEL)
        assert_layout(
            Frame::RstStream {
                stream_id: 3,
                status: RstStatus::Cancel,
            },
            &[
                0x80, 0x03, 0x00, 0x03, 0x00, 0x00, 0x00, 0x08, 0, 0, 0, 3, 0, 0, 0, 5,
            ],
        );
        assert_layout(
            Frame::RstStream {
                stream_id: 9,
                status: RstStatus::FrameTooLarge,
            },
            &[
                0x80, 0x03, 0x00, 0x03, 0x00, 0x00, 0x00, 0x08, 0, 0, 0, 9, 0, 0, 0, 11,
            ],
        );
    }

    #[test]
    fn settings_layout() {
        // type 4, flags CLEAR, length 4 + 2*8; entries: flags|id(24)|value
        assert_layout(
            Frame::Settings {
                clear: true,
                entries: vec![
                    Setting {
                        flags: 0x01,
                        id: 7,
                        value: 0x0001_0000,
                    },
                    Setting {
                        flags: 0x00,
                        id: 4,
                        value: 100,
                    },
                ],
            },
            &[
                0x80, 0x03, 0x00, 0x04, 0x01, 0x00, 0x00, 0x14, //
                0, 0, 0, 2, //
                0x01, 0x00, 0x00, 0x07, 0x00, 0x01, 0x00, 0x00, //
                0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x64,
            ],
        );
    }

    #[test]
    fn ping_goaway_window_update_layouts() {
        assert_layout(
            Frame::Ping { id: 0x0102_0304 },
            &[0x80, 0x03, 0x00, 0x06, 0x00, 0x00, 0x00, 0x04, 1, 2, 3, 4],
        );
        assert_layout(
            Frame::GoAway {
                last_good_stream_id: 7,
                status: GoAwayStatus::ProtocolError,
            },
            &[
                0x80, 0x03, 0x00, 0x07, 0x00, 0x00, 0x00, 0x08, 0, 0, 0, 7, 0, 0, 0, 1,
            ],
        );
        // Stream 0: the session window (3.1).
        assert_layout(
            Frame::WindowUpdate {
                stream_id: 0,
                delta: 0x8000,
            },
            &[
                0x80, 0x03, 0x00, 0x09, 0x00, 0x00, 0x00, 0x08, 0, 0, 0, 0, 0, 0, 0x80, 0,
            ],
        );
        assert_layout(
            Frame::WindowUpdate {
                stream_id: 3,
                delta: 1,
            },
            &[
                0x80, 0x03, 0x00, 0x09, 0x00, 0x00, 0x00, 0x08, 0, 0, 0, 3, 0, 0, 0, 1,
            ],
        );
    }

    #[test]
    fn frames_with_header_blocks_have_spec_prefixes() {
        let headers = h(&[("streamtype", "stdout")]);
        let syn = encode(&Frame::SynStream {
            stream_id: 1,
            associated_stream_id: 0,
            priority: 7,
            slot: 0,
            fin: true,
            unidirectional: true,
            headers: headers.clone(),
        });
        // |1|3|type 1| flags FIN|UNI | length | stream 1 | assoc 0 | pri 7 << 5 | slot 0 | block
        assert_eq!(&syn[..4], &[0x80, 0x03, 0x00, 0x01]);
        assert_eq!(syn[4], 0x03);
        assert_eq!(
            u32::from_be_bytes([0, syn[5], syn[6], syn[7]]) as usize,
            syn.len() - 8
        );
        assert_eq!(&syn[8..18], &[0, 0, 0, 1, 0, 0, 0, 0, 0xe0, 0x00]);
        // The block is a zlib stream with FDICT set and the SPDY dictionary id.
        assert_eq!(&syn[20..24], &[0xe3, 0xc6, 0xa7, 0xc2]);

        let reply = encode(&Frame::SynReply {
            stream_id: 1,
            fin: false,
            headers: headers.clone(),
        });
        assert_eq!(&reply[..5], &[0x80, 0x03, 0x00, 0x02, 0x00]);
        assert_eq!(&reply[8..12], &[0, 0, 0, 1]);

        let hdrs = encode(&Frame::Headers {
            stream_id: 2,
            fin: true,
            headers,
        });
        assert_eq!(&hdrs[..5], &[0x80, 0x03, 0x00, 0x08, 0x01]);
        assert_eq!(&hdrs[8..12], &[0, 0, 0, 2]);
    }

    #[test]
    fn header_block_serialization_layout() {
        // Names lower-cased, duplicates merged NUL-separated (§2.6.10).
        let block =
            serialize_header_block(&h(&[("Port", "80"), ("port", "81"), ("a", "")])).unwrap();
        let mut want = vec![0, 0, 0, 2];
        want.extend_from_slice(&[0, 0, 0, 4]);
        want.extend_from_slice(b"port");
        want.extend_from_slice(&[0, 0, 0, 5]);
        want.extend_from_slice(b"80\x0081");
        want.extend_from_slice(&[0, 0, 0, 1, b'a', 0, 0, 0, 0]);
        assert_eq!(block, want);
        assert_eq!(
            parse_header_block(&block, 10).unwrap(),
            h(&[("port", "80"), ("port", "81"), ("a", "")])
        );
    }

    #[test]
    fn header_compression_context_is_shared_across_blocks() {
        let mut enc = Encoder::new().unwrap();
        let mut dec = Decoder::new(Limits::default());
        let blocks = [
            h(&[
                ("streamtype", "error"),
                ("port", "8080"),
                ("requestid", "0"),
            ]),
            h(&[("streamtype", "data"), ("port", "8080"), ("requestid", "0")]),
            h(&[("streamtype", "data"), ("port", "8080"), ("requestid", "0")]),
        ];
        let compressed: Vec<Vec<u8>> = blocks
            .iter()
            .map(|b| enc.compress_headers(b).unwrap())
            .collect();
        for (block, bytes) in blocks.iter().zip(&compressed) {
            assert_eq!(&dec.inflate_headers(bytes).unwrap(), block);
        }
        // Only the first block carries a zlib header; a repeat block is tiny because it refers
        // back into the shared window...
        assert_eq!(compressed[0][0], 0x78);
        assert!(
            compressed[2].len() < compressed[0].len() / 2,
            "{compressed:?}"
        );
        // ...and cannot be inflated by a fresh context.
        let mut fresh = Decoder::new(Limits::default());
        assert!(fresh.inflate_headers(&compressed[2]).is_err());
    }

    #[test]
    fn decodes_blocks_compressed_by_python_zlib() {
        // Generated once with CPython 3 / zlib 1.2.13, one compressor for both blocks:
        //   c = zlib.compressobj(9, zlib.DEFLATED, 15, 8, zlib.Z_DEFAULT_STRATEGY, zdict=spdy3_dict)
        //   b1 = c.compress(block([(b'streamtype',b'error'),(b'port',b'8080'),(b'requestid',b'0')]))
        //        + c.flush(zlib.Z_SYNC_FLUSH)
        //   b2 = c.compress(block([(b'streamtype',b'data'),(b'port',b'8080'),(b'x-multi',b'a\x00b')]))
        //        + c.flush(zlib.Z_SYNC_FLUSH)
        // where block() writes the v3 count/length-prefixed pairs and spdy3_dict is `dictionary()`.
        let b1 = unhex(
            "78f9e3c6a7c202253a703a2b294a4dcc851625aca9a0808614cb45e01c6061606100a4398b20d198094ade8c0600000000ffff",
        );
        let b2 = unhex("c2aa19540e2562d1cb5ea19b5b9a5392092e78199200000000ffff");
        // Wrap them in frames: SYN_STREAM (stream 1, FIN|UNIDIRECTIONAL, priority 3) then HEADERS.
        let mut wire = Vec::new();
        wire.extend_from_slice(&[
            0x80,
            0x03,
            0x00,
            0x01,
            0x03,
            0x00,
            0x00,
            (10 + b1.len()) as u8,
        ]);
        wire.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 3 << 5, 0]);
        wire.extend_from_slice(&b1);
        wire.extend_from_slice(&[
            0x80,
            0x03,
            0x00,
            0x08,
            0x00,
            0x00,
            0x00,
            (4 + b2.len()) as u8,
        ]);
        wire.extend_from_slice(&[0, 0, 0, 1]);
        wire.extend_from_slice(&b2);
        let mut dec = Decoder::new(Limits::default());
        let mut buf = BytesMut::from(&wire[..]);
        assert_eq!(
            dec.decode(&mut buf).unwrap(),
            Some(Frame::SynStream {
                stream_id: 1,
                associated_stream_id: 0,
                priority: 3,
                slot: 0,
                fin: true,
                unidirectional: true,
                headers: h(&[
                    ("streamtype", "error"),
                    ("port", "8080"),
                    ("requestid", "0")
                ]),
            })
        );
        assert_eq!(
            dec.decode(&mut buf).unwrap(),
            Some(Frame::Headers {
                stream_id: 1,
                fin: false,
                headers: h(&[
                    ("streamtype", "data"),
                    ("port", "8080"),
                    ("x-multi", "a"),
                    ("x-multi", "b")
                ]),
            })
        );
        assert_eq!(dec.decode(&mut buf).unwrap(), None);
    }

    #[test]
    fn decoding_is_incremental() {
        let frames = vec![
            Frame::Ping { id: 1 },
            Frame::SynReply {
                stream_id: 1,
                fin: false,
                headers: h(&[("a", "b")]),
            },
            Frame::Data {
                stream_id: 1,
                fin: true,
                data: Bytes::from_static(b"payload"),
            },
        ];
        let mut enc = Encoder::new().unwrap();
        let mut wire = BytesMut::new();
        for f in &frames {
            enc.encode(f, &mut wire).unwrap();
        }
        let mut dec = Decoder::new(Limits::default());
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for byte in wire.iter() {
            buf.extend_from_slice(&[*byte]);
            while let Some(frame) = dec.decode(&mut buf).unwrap() {
                got.push(frame);
            }
        }
        assert_eq!(got, frames);
        assert!(buf.is_empty());
    }

    #[test]
    fn rejects_bad_frames() {
        // Oversized DATA is refused from its 8-byte header alone.
        let mut dec = Decoder::new(Limits {
            max_data_payload: 16,
            ..Limits::default()
        });
        let mut buf = BytesMut::from(&[0u8, 0, 0, 1, 0, 0, 0, 17][..]);
        assert_eq!(
            dec.decode(&mut buf),
            Err(FrameError::FrameTooLarge { len: 17, max: 16 })
        );
        // SPDY/2 control frame.
        assert_eq!(
            decode_one(&[0x80, 0x02, 0x00, 0x06, 0, 0, 0, 4, 0, 0, 0, 1]),
            Err(FrameError::UnsupportedVersion(2))
        );
        // GOAWAY must be 8 bytes in v3.
        assert!(matches!(
            decode_one(&[0x80, 0x03, 0x00, 0x07, 0, 0, 0, 4, 0, 0, 0, 1]),
            Err(FrameError::InvalidLength { .. })
        ));
        // SETTINGS whose count disagrees with its length.
        assert!(matches!(
            decode_one(&[0x80, 0x03, 0x00, 0x04, 0, 0, 0, 4, 0xff, 0xff, 0xff, 0xff]),
            Err(FrameError::InvalidLength { .. })
        ));
        assert_eq!(
            decode_one(&[0x80, 0x03, 0x00, 0x03, 0, 0, 0, 8, 0, 0, 0, 1, 0, 0, 0, 0]),
            Err(FrameError::InvalidRstStatus)
        );
        assert_eq!(
            decode_one(&[0, 0, 0, 0, 0, 0, 0, 0]),
            Err(FrameError::ZeroStreamId("DATA"))
        );
        // A header block that is not zlib at all.
        assert!(matches!(
            decode_one(&[0x80, 0x03, 0x00, 0x02, 0, 0, 0, 8, 0, 0, 0, 1, 1, 2, 3, 4]),
            Err(FrameError::Compression(_))
        ));
        // Unknown control frame types are surfaced to be ignored (§2.2.1).
        assert_eq!(
            decode_one(&[0x80, 0x03, 0x00, 0x0a, 0x00, 0, 0, 2, 9, 9]),
            Ok(Some(Frame::Unknown {
                frame_type: 10,
                flags: 0,
                length: 2
            }))
        );
    }

    #[test]
    fn header_block_limits_hold() {
        let mut enc = Encoder::new().unwrap();
        let big = h(&[("x", &"y".repeat(4096))]);
        let block = enc.compress_headers(&big).unwrap();
        let mut dec = Decoder::new(Limits {
            max_header_block: 1024,
            ..Limits::default()
        });
        assert_eq!(
            dec.inflate_headers(&block),
            Err(FrameError::HeaderBlockTooLarge { max: 1024 })
        );
        let many: Headers = (0..20).map(|i| (format!("h{i}"), String::new())).collect();
        let block = serialize_header_block(&many).unwrap();
        assert_eq!(
            parse_header_block(&block, 10),
            Err(FrameError::TooManyHeaders { count: 20, max: 10 })
        );
        // Lengths pointing past the block.
        assert!(parse_header_block(&[0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff, b'a'], 10).is_err());
    }

    /// Deterministic fuzzing: truncations, bit flips and garbage must yield frames, `None` or
    /// errors, never a panic or an endless loop.
    #[test]
    fn never_panics_on_mangled_input() {
        let mut enc = Encoder::new().unwrap();
        let mut valid = BytesMut::new();
        let samples = vec![
            Frame::SynStream {
                stream_id: 1,
                associated_stream_id: 0,
                priority: 0,
                slot: 0,
                fin: false,
                unidirectional: false,
                headers: h(&[("streamtype", "stdin"), ("port", "80")]),
            },
            Frame::Data {
                stream_id: 1,
                fin: false,
                data: Bytes::from_static(b"hello"),
            },
            Frame::Settings {
                clear: false,
                entries: vec![Setting {
                    flags: 0,
                    id: 7,
                    value: 1,
                }],
            },
            Frame::Headers {
                stream_id: 1,
                fin: true,
                headers: h(&[("k", "v")]),
            },
            Frame::WindowUpdate {
                stream_id: 1,
                delta: 5,
            },
            Frame::GoAway {
                last_good_stream_id: 1,
                status: GoAwayStatus::Ok,
            },
        ];
        for f in &samples {
            enc.encode(f, &mut valid).unwrap();
        }
        let valid = valid.to_vec();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let run = |input: &[u8]| {
            let mut dec = Decoder::new(Limits::default());
            let mut buf = BytesMut::from(input);
            for _ in 0..input.len() + 1 {
                match dec.decode(&mut buf) {
                    Ok(Some(_)) => continue,
                    Ok(None) | Err(_) => break,
                }
            }
        };
        for cut in 0..valid.len() {
            run(&valid[..cut]);
        }
        for _ in 0..2000 {
            let mut mangled = valid.clone();
            for _ in 0..(next() % 8 + 1) {
                let at = (next() as usize) % mangled.len();
                mangled[at] ^= (next() % 255 + 1) as u8;
            }
            let cut = (next() as usize) % (mangled.len() + 1);
            run(&mangled[..cut]);
        }
        for _ in 0..500 {
            let len = (next() % 200) as usize;
            let mut garbage: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            // Often make it look like a v3 control frame so the type parsers get exercised.
            if len >= 8 && next() % 2 == 0 {
                garbage[0] = 0x80;
                garbage[1] = 0x03;
                garbage[2] = 0;
                garbage[3] = (next() % 11) as u8;
                let body = (len - 8) as u32;
                garbage[5] = (body >> 16) as u8;
                garbage[6] = (body >> 8) as u8;
                garbage[7] = body as u8;
            }
            run(&garbage);
        }
    }
}
