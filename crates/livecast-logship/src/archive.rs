//! Archiving closed logs before they go away (the reference design saved access logs to S3
//! before an instance was removed): rotated files that are fully shipped and have not changed
//! for a while are copied to object storage through `object_store` (S3 or S3-compatible when
//! configured, a local directory by default) and only then removed from the log directory.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, PutPayload};

/// Where closed logs go.
#[derive(Debug, Clone)]
pub(crate) struct Archive {
    /// S3 or a local directory (`--archive`).
    store: Arc<dyn ObjectStore>,
    /// The key prefix archived logs go under.
    prefix: ObjectPath,
    /// `--archive-after-secs`: how long a rotated log must be untouched to count as closed.
    idle: Duration,
}

impl Archive {
    /// `target` is `s3://bucket/prefix` (credentials, region and, for S3-compatible stores,
    /// `AWS_ENDPOINT`/`AWS_ALLOW_HTTP` from the usual `AWS_*` environment), `file:///dir` or a
    /// plain directory.
    pub fn open(target: &str, idle: Duration) -> Result<Self, String> {
        if let Some(rest) = target.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            let store = object_store::aws::AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .build()
                .map_err(|e| format!("cannot configure the archive bucket {bucket:?}: {e}"))?;
            return Ok(Self {
                store: Arc::new(store),
                prefix: ObjectPath::from(prefix),
                idle,
            });
        }
        let dir = match target.strip_prefix("file://") {
            Some(path) => PathBuf::from(path),
            None if target.contains("://") => {
                return Err(format!(
                    "unsupported archive {target:?}: use s3:// or a directory"
                ))
            }
            None => PathBuf::from(target),
        };
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create the archive directory {}: {e}", dir.display()))?;
        let store = object_store::local::LocalFileSystem::new_with_prefix(&dir)
            .map_err(|e| format!("cannot open the archive directory {}: {e}", dir.display()))?;
        Ok(Self {
            store: Arc::new(store),
            prefix: ObjectPath::from(""),
            idle,
        })
    }

    /// Whether a file is a closed log: a rotated name (`<name>.<digits>.log`) untouched for
    /// the idle time. Active logs (`<instance>.log`) are never taken: their writer still holds them.
    pub fn is_closed(&self, path: &Path, now: SystemTime) -> bool {
        let rotated = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".log"))
            .and_then(|stem| stem.rsplit_once('.'))
            .is_some_and(|(_, tag)| !tag.is_empty() && tag.bytes().all(|b| b.is_ascii_digit()));
        let idle = std::fs::metadata(path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|m| now.duration_since(m).ok())
            .is_some_and(|age| age >= self.idle);
        rotated && idle
    }

    /// Copies `path` to the store, checks the stored size, then removes the local file.
    pub async fn archive(&self, path: &Path) -> Result<(), String> {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or("file name is not utf-8")?;
        let bytes = tokio::fs::read(path).await.map_err(|e| e.to_string())?;
        let len = bytes.len() as u64;
        let location = self.prefix.child(name);
        self.store
            .put(&location, PutPayload::from(bytes))
            .await
            .map_err(|e| format!("upload of {name} failed: {e}"))?;
        let stored = self
            .store
            .head(&location)
            .await
            .map_err(|e| e.to_string())?;
        if stored.size != len {
            return Err(format!("{name}: archived {} bytes of {len}", stored.size));
        }
        tokio::fs::remove_file(path)
            .await
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_rotated_idle_files_are_closed() {
        let dir = tempfile::tempdir().unwrap();
        let archive = Archive::open(
            dir.path().join("archive").to_str().unwrap(),
            Duration::from_secs(60),
        )
        .unwrap();
        for name in [
            "web-1.log",
            "web-1.1700000000000.log",
            "web-1.x.log",
            "notes.txt",
        ] {
            std::fs::write(dir.path().join(name), "x\n").unwrap();
        }
        let later = SystemTime::now() + Duration::from_secs(120);
        assert!(archive.is_closed(&dir.path().join("web-1.1700000000000.log"), later));
        assert!(
            !archive.is_closed(
                &dir.path().join("web-1.1700000000000.log"),
                SystemTime::now()
            ),
            "still fresh"
        );
        assert!(
            !archive.is_closed(&dir.path().join("web-1.log"), later),
            "the active log"
        );
        assert!(!archive.is_closed(&dir.path().join("web-1.x.log"), later));
        assert!(Archive::open("ftp://x", Duration::ZERO).is_err());
    }
}
