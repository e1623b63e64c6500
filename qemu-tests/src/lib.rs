//! The boot tests of Mast's appliances, one file per appliance in `tests/`, plus bad-image and
//! board tests. They boot real QEMU VMs through the [`qemu`] crate, which holds the harness; this
//! crate has no code of its own.
