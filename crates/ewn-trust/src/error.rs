use std::path::PathBuf;

use thiserror::Error;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: secret file is accessible by group or others (mode {mode:o}); run chmod 600")]
    InsecureMode { path: PathBuf, mode: u32 },
    #[error("{path}: {message}")]
    BadKeyFile { path: PathBuf, message: String },
    #[error("{path}: {problems}")]
    BadTrustStore { path: PathBuf, problems: String },
    #[error("{path}: already exists; refusing to overwrite a secret")]
    Exists { path: PathBuf },
    #[error("trust store already holds key `{key_id}`")]
    DuplicateKey { key_id: String },
    #[error("trust store holds no key `{key_id}`")]
    UnknownKey { key_id: String },
    #[error("key `{key_id}` is already revoked (at {at})")]
    AlreadyRevoked { key_id: String, at: String },
    #[error("cannot sign incident: {0}")]
    Encode(#[from] ewn_model::Error),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }
}
