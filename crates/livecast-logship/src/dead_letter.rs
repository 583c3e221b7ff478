//! The dead-letter file: lines that no sink will ever take (not access-log JSON, or refused
//! by the sink for good), kept with the reason for a person to look at.

use std::io::Write as _;
use std::path::Path;

use crate::source::Line;

/// Appends `which` of `lines`, with the reason, to the dead-letter file at `path` and syncs
/// it: a line leaves the log only once it is safely somewhere else.
pub(crate) fn append(
    path: &Path,
    sink: &str,
    lines: &[Line],
    which: &[(usize, String)],
) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    for (i, reason) in which {
        let record = serde_json::json!({
            "sink": sink,
            "reason": reason,
            "id": lines[*i].id(),
            "line": String::from_utf8_lossy(&lines[*i].bytes),
        });
        writeln!(f, "{record}")?;
        tracing::warn!(sink, %reason, id = %lines[*i].id(), "line dead-lettered");
    }
    f.sync_all()
}
