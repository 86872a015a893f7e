//! The smurf's compiled templates, kept across reconnects and, with a state folder, across
//! restarts: a smurf announces what it holds in its hello, so the coordinator ships a template
//! to it only once even if the smurf was restarted (e.g. upgraded) mid-campaign.

use std::collections::HashMap;
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
            for entry in std::fs::read_dir(dir)? {
                let path = entry?.path();
                if path.extension().and_then(|e| e.to_str()) != Some("bundle") {
                    continue;
                }
                match load_one(&path) {
                    Ok(campaign) => {
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
            if let Err(e) = std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, &path))
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
