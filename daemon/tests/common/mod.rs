//! What the daemon's in-process integration tests share: a real cairn-server on 127.0.0.1 (local
//! store, SQLite in the test's temp dir) and devices with a token for it.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use cairn::config::Config;

pub struct Server {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    pub db: PathBuf,
    pub url: String,
}

impl Server {
    /// Starts a server under `base/server` with namespace `ns`; `configure` may change the
    /// defaults `cairn-server serve` uses.
    pub async fn start(
        base: &Path,
        ns: &str,
        configure: impl FnOnce(&mut cairn_server::ServeConfig),
    ) -> Server {
        let db = base.join("server/meta.db");
        std::fs::create_dir_all(base.join("server")).unwrap();
        cairn_server::admin::create_namespace(&db, ns).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let mut config = cairn_server::ServeConfig::new(
            db.clone(),
            format!("local:{}", base.join("server/blobs").display()),
        );
        configure(&mut config);
        let task = tokio::spawn(cairn_server::serve(listener, config, async {
            let _ = stopped.await;
        }));
        Server {
            stop: Some(stop),
            task,
            db,
            url,
        }
    }

    /// A device's config: its own home under `base`, with a token for `ns`.
    pub fn device(&self, base: &Path, ns: &str, name: &str) -> Config {
        let home = base.join(format!("home-{name}"));
        std::fs::create_dir_all(&home).unwrap();
        let token = cairn_server::admin::create_token(&self.db, ns, name).unwrap();
        std::fs::write(home.join("token"), format!("{token}\n")).unwrap();
        std::fs::set_permissions(home.join("token"), std::fs::Permissions::from_mode(0o600))
            .unwrap();
        Config::resolve(Some(self.url.clone()), None, Some(&home)).unwrap()
    }

    /// Asks the server to stop and waits for it.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

/// Adds `dir` as a live folder of namespace `ns` on the device `cfg` and opens its control task
/// (quiet events), as `cairn daemon` would.
#[allow(dead_code)] // not every test binary runs live folders
pub async fn open_folder(cfg: &Config, dir: &Path, ns: &str) -> cairn::sync::FolderSync {
    let root = cairn::live::add(cfg, dir, ns).unwrap();
    let folder = cairn::state::State::open(&cfg.dirs.state_db())
        .unwrap()
        .add_live(&root, ns, &cfg.server)
        .unwrap();
    let events = cairn::events::Events {
        json: false,
        quiet: true,
    };
    cairn::sync::FolderSync::open(cfg, folder, root, ns.into(), events)
        .await
        .unwrap()
}

/// Every path below `root` but `.cairn`, sorted, with a file's bytes (`<dir>` for a folder).
#[allow(dead_code)] // not every test binary compares trees
pub fn tree(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for e in ignore::WalkBuilder::new(root)
        .standard_filters(false)
        .build()
        .flatten()
    {
        let rel = e.path().strip_prefix(root).unwrap().to_string_lossy();
        if rel.is_empty() || rel == ".cairn" || rel.starts_with(".cairn/") {
            continue;
        }
        let bytes = if e.path().is_file() {
            std::fs::read(e.path()).unwrap()
        } else {
            b"<dir>".to_vec()
        };
        out.push((rel.into_owned(), bytes));
    }
    out.sort();
    out
}
