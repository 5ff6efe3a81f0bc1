//! The daemon's event stream: JSON lines on stdout with `--json`, short lines on stderr otherwise.

use std::io::Write;

/// Where events go. Cheap to clone; each line is written whole.
#[derive(Clone, Copy, Debug)]
pub struct Events {
    pub json: bool,
    pub quiet: bool,
}

impl Events {
    /// Emits `{"event": kind, ...fields}`; `fields` must be a JSON object.
    pub fn emit(&self, kind: &str, fields: serde_json::Value) {
        let mut obj = match fields {
            serde_json::Value::Object(m) => m,
            _ => serde_json::Map::new(),
        };
        obj.insert("event".into(), kind.into());
        obj.insert(
            "ts_ms".into(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64)
                .into(),
        );
        let line = serde_json::Value::Object(obj).to_string();
        if self.json {
            let mut out = std::io::stdout().lock();
            // A closed stdout must not stop the sync: the event is only lost.
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        } else if !self.quiet && kind != "idle" && kind != "round" {
            eprintln!("cairn: {line}");
        }
    }
}
