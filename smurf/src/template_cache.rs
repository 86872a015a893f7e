//! The smurf's compiled templates, kept across reconnects and, with a state folder, across
//! restarts: a smurf announces what it holds in its hello, so the coordinator ships a template
//! to it only once even if the smurf was restarted (e.g. upgraded) mid-campaign.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mailfarm_protocol::{ContentHash, TemplateBundle};
use tracing::warn;

use crate::delivery::CompiledCampaign;

/// Compiled templates by content hash, optionally persisted in a folder.
pub struct TemplateCache {
    dir: Option<PathBuf>,
    compiled: HashMap<ContentHash, Arc<CompiledCampaign>>,
}

fn hex(hash: &ContentHash) -> String {
    hash.0.iter().map(|b| format!("{b:02x}")).collect()
}

fn compile(bundle: TemplateBundle) -> Result<CompiledCampaign, mailfarm_templates::TemplateError> {
    let template = mailfarm_templates::compile_bundle(&bundle)?;
    Ok(CompiledCampaign { bundle, template })
}

/// Writes `bytes` to a new file only its owner can read: a bundle holds the farm's VERP key.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

fn load_one(path: &Path) -> Result<CompiledCampaign, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let bundle: TemplateBundle = postcard::from_bytes(&bytes).map_err(|e| e.to_string())?;
    let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
    if name != hex(&bundle.hash) {
        return Err("file name does not match the bundle's hash".into());
    }
    compile(bundle).map_err(|e| e.to_string())
}

impl TemplateCache {
    /// A cache persisted in `dir` (created if needed), loading what it already holds; or a
    /// memory-only cache with `None`. Unreadable files are logged and removed.
    pub fn open(dir: Option<PathBuf>) -> std::io::Result<Self> {
        let mut compiled = HashMap::new();
        if let Some(dir) = &dir {
            std::fs::create_dir_all(dir)?;
            // The bundles hold the VERP key: the folder and its files are the owner's alone
            // (this also tightens files written by older versions with default permissions).
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
            for entry in std::fs::read_dir(dir)? {
                let path = entry?.path();
                if path.extension().and_then(|e| e.to_str()) != Some("bundle") {
                    continue;
                }
                match load_one(&path) {
                    Ok(campaign) => {
                        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
                        compiled.insert(campaign.bundle.hash, Arc::new(campaign));
                    }
                    Err(e) => {
                        warn!(path = %path.display(), "dropping unusable cached template: {e}");
                        let _ = std::fs::remove_file(&path);
                    }
                }
            }
        }
        Ok(Self { dir, compiled })
    }

    /// Hashes of the templates held.
    pub fn held(&self) -> Vec<ContentHash> {
        self.compiled.keys().copied().collect()
    }

    /// Compiles and keeps a bundle (persisting it when the cache has a folder).
    pub fn insert(
        &mut self,
        bundle: TemplateBundle,
    ) -> Result<Arc<CompiledCampaign>, mailfarm_templates::TemplateError> {
        let hash = bundle.hash;
        let encoded = postcard::to_allocvec(&bundle);
        let campaign = Arc::new(compile(bundle)?);
        if let (Some(dir), Ok(bytes)) = (&self.dir, encoded) {
            let path = dir.join(format!("{}.bundle", hex(&hash)));
            let tmp = dir.join(format!("{}.tmp", hex(&hash)));
            if let Err(e) = write_private(&tmp, &bytes).and_then(|()| std::fs::rename(&tmp, &path))
            {
                warn!(path = %path.display(), "cannot persist template: {e}");
            }
        }
        self.compiled.insert(hash, campaign.clone());
        Ok(campaign)
    }

    /// A held template.
    pub fn get(&self, hash: &ContentHash) -> Option<Arc<CompiledCampaign>> {
        self.compiled.get(hash).cloned()
    }

    /// Drops a template (and its file).
    pub fn remove(&mut self, hash: &ContentHash) {
        self.compiled.remove(hash);
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_file(dir.join(format!("{}.bundle", hex(hash))));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn bundle() -> TemplateBundle {
        TemplateBundle {
            hash: ContentHash([9; 32]),
            subject: "Hi".into(),
            ..mailfarm_protocol::fixtures::bundle()
        }
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn bundle_files_are_private_and_go_with_forget() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("templates");
        let mut cache = TemplateCache::open(Some(dir.clone())).unwrap();
        let b = bundle();
        cache.insert(b.clone()).unwrap();
        let file = dir.join(format!("{}.bundle", hex(&b.hash)));
        assert_eq!(mode(&file), 0o600, "a bundle holds the VERP key");
        assert_eq!(mode(&dir), 0o700);

        // A file left world-readable by an older version is tightened when loaded.
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let mut cache = TemplateCache::open(Some(dir.clone())).unwrap();
        assert_eq!(cache.held(), vec![b.hash]);
        assert_eq!(mode(&file), 0o600);

        cache.remove(&b.hash);
        assert!(!file.exists());
        assert!(cache.held().is_empty());
    }
}
