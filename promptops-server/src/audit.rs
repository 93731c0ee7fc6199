//! Audit log export formats.

use crate::registry::AuditRecord;

pub const CSV_HEADER: &str = "seq,at,actor,action,org,project,prompt,label,before_version,after_version,request_id,details,prev_hash,hash";

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// RFC 4180 CSV with a header line.
pub fn to_csv(rows: &[AuditRecord]) -> String {
    let mut out = String::with_capacity(rows.len() * 200 + 200);
    out.push_str(CSV_HEADER);
    out.push_str("\r\n");
    for r in rows {
        let opt = |o: &Option<String>| o.clone().unwrap_or_default();
        let num = |o: Option<i64>| o.map(|v| v.to_string()).unwrap_or_default();
        let fields = [
            r.seq.to_string(),
            r.at.clone(),
            r.actor.clone(),
            r.action.clone(),
            opt(&r.org),
            opt(&r.project),
            opt(&r.prompt),
            opt(&r.label),
            num(r.before_version),
            num(r.after_version),
            opt(&r.request_id),
            r.details.clone(),
            r.prev_hash.clone(),
            r.hash.clone(),
        ];
        let line: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
        out.push_str(&line.join(","));
        out.push_str("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
    }
}
