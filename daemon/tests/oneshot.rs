//! One-shot `pull` against an in-process cairn-server, where the server must fail between two
//! calls: a fault injected at the tree listing, after the namespace call succeeded.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

mod common;

use cairn::commands::{Ui, pull};
use cairn::faults::{self, Fault, Injector, Site};

const NS: &str = "oneshot";
const UI: Ui = Ui {
    quiet: true,
    json: false,
};

/// Fails every tree listing; counts them.
#[derive(Default)]
struct NoListing {
    listings: AtomicUsize,
}

impl Injector for NoListing {
    fn at(&self, site: Site, key: &str) -> Option<Fault> {
        (site == Site::Rpc && key == "ListTree").then(|| {
            self.listings.fetch_add(1, Ordering::SeqCst);
            Fault::Fail
        })
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_pull_whose_listing_fails_removes_the_folder_it_created_and_keeps_one_it_found() {
    let base = tempfile::tempdir().unwrap();
    let server = common::Server::start(base.path(), NS, |_| {}).await;
    let cfg = server.device(base.path(), NS, "a");
    let injector = Arc::new(NoListing::default());
    faults::install(injector.clone());

    // Missing before the pull: created once the server answered, removed when the listing failed.
    let new = base.path().join("new");
    let err = pull(&cfg, &new, NS, UI, false).await.unwrap_err();
    assert!(err.to_string().contains("ListTree"), "{err}");
    assert!(
        injector.listings.load(Ordering::SeqCst) > 0,
        "the listing was never asked for"
    );
    assert!(
        !new.exists(),
        "the failed pull left {} behind",
        new.display()
    );

    // There before the pull: kept, with what was in it.
    let found = base.path().join("found");
    std::fs::create_dir(&found).unwrap();
    std::fs::write(found.join("mine.txt"), "kept").unwrap();
    pull(&cfg, &found, NS, UI, false).await.unwrap_err();
    assert_eq!(
        std::fs::read_to_string(found.join("mine.txt")).unwrap(),
        "kept"
    );

    faults::uninstall();
    // The same pull works once the server lists again.
    let summary = pull(&cfg, &new, NS, UI, false).await.unwrap();
    assert!(summary.errors.is_empty(), "{:?}", summary.errors);
    assert!(new.is_dir());
    server.stop().await;
}
