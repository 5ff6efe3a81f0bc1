//! The end-to-end suite: one test binary (faster links), one module per issue's acceptance.

/// One test per (scenario, backend), named `<scenario>_on_<backend>`.
macro_rules! on_every_backend {
    ($($scenario:ident),* $(,)?) => {
        mod on_local_store {
            $( #[test] fn $scenario() -> anyhow::Result<()> { super::$scenario(cairn_e2e::Backend::Local) } )*
        }
        mod on_garage {
            $( #[test] fn $scenario() -> anyhow::Result<()> { super::$scenario(cairn_e2e::Backend::Garage) } )*
        }
    };
}
pub(crate) use on_every_backend;

mod accounts;
mod faults;
mod foundation;
mod guard;
mod history;
mod hostile;
mod live;
mod packs;
mod paths;
