//! A Server-Sent Events parser (the WHATWG event-stream format): feed it
//! bytes as they arrive, get complete events out.

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Event {
    pub event: String,
    pub id: Option<String>,
    pub data: String,
}

/// Incremental parser. Lines may end in `\n`, `\r\n` or `\r`; `:` lines are
/// comments (heartbeats); an empty line dispatches the event.
#[derive(Debug, Default)]
pub struct Parser {
    buf: Vec<u8>,
    event: String,
    data: String,
    has_data: bool,
    id: Option<String>,
    /// The last event id seen (persists across events, per the spec).
    pub last_id: Option<String>,
    /// Bytes of the event being assembled (to bound memory).
    pending: usize,
}

/// The largest event accepted (a snapshot of a big project fits easily).
pub const MAX_EVENT_BYTES: usize = 64 << 20;

impl Parser {
    /// Feed bytes; returns the events completed by them. Errors when an
    /// event grows past [`MAX_EVENT_BYTES`].
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<Event>, String> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        let mut start = 0;
        let mut i = 0;
        while i < self.buf.len() {
            let b = self.buf[i];
            if b == b'\n' || b == b'\r' {
                let line_end = i;
                // \r\n counts as one line ending; a \r at the very end of
                // the buffer may be followed by \n in the next chunk.
                if b == b'\r' {
                    if i + 1 == self.buf.len() {
                        break;
                    }
                    if self.buf[i + 1] == b'\n' {
                        i += 1;
                    }
                }
                let line = String::from_utf8_lossy(&self.buf[start..line_end]).into_owned();
                if let Some(ev) = self.line(&line) {
                    out.push(ev);
                }
                start = i + 1;
            }
            i += 1;
        }
        self.buf.drain(..start);
        if self.pending + self.buf.len() > MAX_EVENT_BYTES {
            return Err(format!("event larger than {MAX_EVENT_BYTES} bytes"));
        }
        Ok(out)
    }

    fn line(&mut self, line: &str) -> Option<Event> {
        if line.is_empty() {
            if !self.has_data {
                self.event.clear();
                return None;
            }
            let ev = Event {
                event: if self.event.is_empty() {
                    "message".into()
                } else {
                    std::mem::take(&mut self.event)
                },
                id: self.id.clone().or_else(|| self.last_id.clone()),
                data: std::mem::take(&mut self.data),
            };
            self.has_data = false;
            self.pending = 0;
            self.event.clear();
            return Some(ev);
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = match line.find(':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(' ').unwrap_or(v))
            }
            None => (line, ""),
        };
        match field {
            "event" => self.event = value.to_string(),
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
                self.pending += value.len();
            }
            "id" if !value.contains('\0') => {
                self.id = Some(value.to_string());
                self.last_id = Some(value.to_string());
            }
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_events_split_anywhere() {
        let stream = b": hello\n\nevent: snapshot\nid: 7\ndata: {\"a\":\ndata: 1}\n\n: ping\r\n\r\nevent: delta\r\nid: 8\r\ndata: x\r\n\r\ndata: plain\n\n";
        for split in 0..stream.len() {
            let mut p = Parser::default();
            let mut evs = p.feed(&stream[..split]).unwrap();
            evs.extend(p.feed(&stream[split..]).unwrap());
            assert_eq!(evs.len(), 3, "split at {split}");
            assert_eq!(evs[0].event, "snapshot");
            assert_eq!(evs[0].id.as_deref(), Some("7"));
            assert_eq!(evs[0].data, "{\"a\":\n1}");
            assert_eq!(evs[1].event, "delta");
            assert_eq!(evs[1].data, "x");
            assert_eq!(evs[2].event, "message");
            assert_eq!(evs[2].id.as_deref(), Some("8"));
            assert_eq!(p.last_id.as_deref(), Some("8"));
        }
    }

    #[test]
    fn bounded() {
        let mut p = Parser::default();
        let big = vec![b'x'; MAX_EVENT_BYTES + 10];
        assert!(p.feed(&big).is_err());
    }
}
