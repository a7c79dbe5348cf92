//! Where the model directory is.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::config;
use crate::error::{Error, Result};

/// Name of the default model, and of its directory under the cache.
pub const DEFAULT_MODEL_NAME: &str = "all-MiniLM-L6-v2";

/// Where `scripts/fetch-model` installs the default model:
/// `$XDG_CACHE_HOME/precedent/models/all-MiniLM-L6-v2`, else
/// `$HOME/.cache/precedent/models/all-MiniLM-L6-v2` (`~/Library/Caches/...` on macOS).
/// `None` when neither variable holds an absolute path.
pub fn default_model_dir() -> Option<PathBuf> {
    default_candidates().into_iter().next()
}

/// The model directory to load: `explicit` when given (the CLI passes `--model-dir` or
/// `$PRECEDENT_MODEL_DIR`), otherwise the first complete default location.
///
/// An explicit directory is returned as long as it exists, so that
/// [`BertEmbedder::load`](crate::BertEmbedder::load) can say exactly which file it lacks. Without
/// one, both default locations are tried (`$XDG_CACHE_HOME/...` and `$HOME/.cache/...`, so a
/// model installed before `XDG_CACHE_HOME` was set is still found). When nothing usable is
/// found, [`Error::ModelNotFound`] names every place tried and how to install the model.
pub fn resolve_model_dir(explicit: Option<&Path>) -> Result<PathBuf> {
    resolve(explicit, default_candidates())
}

fn resolve(explicit: Option<&Path>, defaults: Vec<PathBuf>) -> Result<PathBuf> {
    if let Some(dir) = explicit {
        return if dir.is_dir() {
            Ok(dir.to_owned())
        } else {
            Err(Error::ModelNotFound {
                tried: vec![dir.to_owned()],
            })
        };
    }
    match defaults.iter().find(|d| config::check_dir(d).is_ok()) {
        Some(dir) => Ok(dir.clone()),
        None => Err(Error::ModelNotFound { tried: defaults }),
    }
}

fn default_candidates() -> Vec<PathBuf> {
    candidates(std::env::var_os("XDG_CACHE_HOME"), std::env::var_os("HOME"))
}

/// The default locations, best first. Relative values are ignored, as the XDG base directory
/// specification says.
fn candidates(xdg_cache_home: Option<OsString>, home: Option<OsString>) -> Vec<PathBuf> {
    let under = |base: PathBuf| {
        base.join("precedent")
            .join("models")
            .join(DEFAULT_MODEL_NAME)
    };
    let absolute = |v: Option<OsString>| v.map(PathBuf::from).filter(|p| p.is_absolute());
    let mut dirs = Vec::new();
    if let Some(cache) = absolute(xdg_cache_home) {
        dirs.push(under(cache));
    }
    if let Some(home) = absolute(home) {
        let cache = if cfg!(target_os = "macos") {
            home.join("Library").join("Caches")
        } else {
            home.join(".cache")
        };
        let dir = under(cache);
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    dirs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(s: &str) -> Option<OsString> {
        Some(OsString::from(s))
    }

    #[test]
    fn xdg_first_then_home() {
        let home_cache = if cfg!(target_os = "macos") {
            "/home/u/Library/Caches"
        } else {
            "/home/u/.cache"
        };
        assert_eq!(
            candidates(os("/xdg"), os("/home/u")),
            vec![
                PathBuf::from("/xdg/precedent/models/all-MiniLM-L6-v2"),
                PathBuf::from(format!("{home_cache}/precedent/models/all-MiniLM-L6-v2")),
            ]
        );
        assert_eq!(candidates(None, os("/home/u")).len(), 1);
        assert_eq!(candidates(os("relative/dir"), None), Vec::<PathBuf>::new());
        assert_eq!(candidates(os(""), None), Vec::<PathBuf>::new());
    }

    #[test]
    fn same_location_is_tried_once() {
        if !cfg!(target_os = "macos") {
            assert_eq!(candidates(os("/home/u/.cache"), os("/home/u")).len(), 1);
        }
    }

    #[test]
    fn explicit_directory_wins_and_must_exist() {
        let tmp = tempfile::tempdir().unwrap();
        let got = resolve(Some(tmp.path()), vec![PathBuf::from("/nowhere")]).unwrap();
        assert_eq!(got, tmp.path());

        let missing = tmp.path().join("absent");
        match resolve(Some(&missing), vec![PathBuf::from("/nowhere")]) {
            Err(Error::ModelNotFound { tried }) => assert_eq!(tried, vec![missing]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn defaults_need_every_model_file() {
        let tmp = tempfile::tempdir().unwrap();
        let incomplete = tmp.path().join("a");
        let complete = tmp.path().join("b");
        std::fs::create_dir_all(incomplete.join("1_Pooling")).unwrap();
        std::fs::create_dir_all(complete.join("1_Pooling")).unwrap();
        for file in config::REQUIRED {
            std::fs::write(complete.join(file), b"{}").unwrap();
        }
        std::fs::write(incomplete.join(config::CONFIG), b"{}").unwrap();

        let found = resolve(None, vec![incomplete.clone(), complete.clone()]).unwrap();
        assert_eq!(found, complete);

        let err = resolve(None, vec![incomplete.clone(), tmp.path().join("c")]).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::ModelNotFound { ref tried } if tried.len() == 2));
        assert!(msg.contains(&*incomplete.to_string_lossy()), "{msg}");
        assert!(msg.contains("scripts/fetch-model"), "{msg}");
    }
}
