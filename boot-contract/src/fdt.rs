//! A minimal flattened device tree (DTB) reader. Owned by the aarch64 port.
//!
//! The boot loader hands an aarch64 kernel a device tree blob describing the machine: where RAM is,
//! which UART is the console, how to power off, and the kernel command line. This module reads such
//! a blob in place, without allocating, and answers the few questions boot asks of it. It also
//! holds [`largest_free_span`], the arithmetic boot uses to pick the heap out of the tree's memory
//! and reservations, so that it is unit-tested on the host with the rest.
//!
//! # Guarantees
//! - Safe code only, over a `&[u8]`: the caller decides where the bytes come from.
//! - Never panics, whatever the input. [`Fdt::new`] checks the header and walks the whole structure
//!   block once (tokens, nesting, names, string offsets, property sizes); every later read is
//!   bounds-checked as well, so a blob that passed validation cannot make an iterator misbehave, and
//!   one that did not pass is refused with a small [`Error`].
//! - Borrowed results: names, property values and strings point into the blob, so they live as long
//!   as it does.
//!
//! # Not supported
//! - Blob versions before 17 (everything produced since 2008 is 17).
//! - Address translation through a parent's `ranges`: [`Node::reg`] returns addresses in the parent
//!   bus's address space, which equals the CPU's on the flat trees QEMU and most SoCs use for the
//!   devices boot needs.
//! - `reg` with more than two address or size cells (PCI addresses), phandle lookups, overlays and
//!   writing or editing a tree.

use core::fmt;

/// The first four bytes of every blob, big-endian.
const MAGIC: u32 = 0xd00d_feed;
/// Bytes in the version 17 header, which is also the smallest possible blob prefix to parse.
pub const HEADER_SIZE: usize = 40;
/// The deepest node nesting accepted; real trees stay below 8.
pub const MAX_DEPTH: usize = 16;

const TOKEN_BEGIN_NODE: u32 = 1;
const TOKEN_END_NODE: u32 = 2;
const TOKEN_PROP: u32 = 3;
const TOKEN_NOP: u32 = 4;
const TOKEN_END: u32 = 9;

/// Why a blob was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Error {
    /// The bytes end before the header, or before the size the header declares.
    Truncated,
    /// The blob does not start with the device tree magic number.
    BadMagic,
    /// The blob's format version is not one this reader understands (it reads version 17).
    UnsupportedVersion,
    /// A block offset or size in the header points outside the blob, or is misaligned.
    BadLayout,
    /// The structure block is malformed: an unknown token, unbalanced nodes, a property outside a
    /// node or after a child node, or data running past the end of the block.
    BadStructure,
    /// A node name is not NUL-terminated UTF-8, the strings block is not UTF-8 ending in NUL, or a
    /// property name offset points outside it or into the middle of a character.
    BadString,
    /// Nodes nest deeper than [`MAX_DEPTH`].
    TooDeep,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Error::Truncated => "the blob is truncated",
            Error::BadMagic => "bad magic number (not a device tree blob)",
            Error::UnsupportedVersion => "unsupported device tree version (need 17)",
            Error::BadLayout => "a header offset or size is out of range",
            Error::BadStructure => "the structure block is malformed",
            Error::BadString => "a name or string is malformed",
            Error::TooDeep => "nodes nest too deeply",
        })
    }
}

/// The result of reading a blob.
pub type Result<T = ()> = core::result::Result<T, Error>;

/// Reads the big-endian `u32` at `offset`, if the bytes are there.
fn be32(bytes: &[u8], offset: usize) -> Option<u32> {
    let raw = bytes.get(offset..offset.checked_add(4)?)?;
    Some(u32::from_be_bytes(raw.try_into().ok()?))
}

/// Reads the big-endian `u64` at `offset`, if the bytes are there.
fn be64(bytes: &[u8], offset: usize) -> Option<u64> {
    let raw = bytes.get(offset..offset.checked_add(8)?)?;
    Some(u64::from_be_bytes(raw.try_into().ok()?))
}

/// Rounds `offset` up to the structure block's 4-byte token alignment.
fn align4(offset: usize) -> Option<usize> {
    Some(offset.checked_add(3)? & !3)
}

/// The NUL-terminated UTF-8 string starting at `offset`, without its NUL.
fn c_str(bytes: &[u8], offset: usize) -> Option<&str> {
    let tail = bytes.get(offset..)?;
    let len = tail.iter().position(|&b| b == 0)?;
    core::str::from_utf8(tail.get(..len)?).ok()
}

/// Reads the blob's declared total size from its first 8 bytes.
///
/// Boot code that only has a pointer uses this to learn how many bytes to look at before calling
/// [`Fdt::new`].
pub fn total_size(header: &[u8]) -> Result<usize> {
    let magic = be32(header, 0).ok_or(Error::Truncated)?;
    if magic != MAGIC {
        return Err(Error::BadMagic);
    }
    let size = be32(header, 4).ok_or(Error::Truncated)?;
    usize::try_from(size).map_err(|_| Error::BadLayout)
}

/// A range of physical addresses, as found in `reg` properties and the reservation block.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Region {
    /// The first address.
    pub address: u64,
    /// The length in bytes.
    pub size: u64,
}

impl Region {
    /// One past the last address, saturating at the top of the address space.
    pub const fn end(self) -> u64 {
        self.address.saturating_add(self.size)
    }

    /// Whether `address` lies inside this region.
    pub const fn contains(self, address: u64) -> bool {
        self.address <= address && address < self.end()
    }
}

/// `#address-cells` and `#size-cells`: how many 32-bit cells a child's `reg` entry uses for each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cells {
    /// Cells per address.
    pub address: u32,
    /// Cells per size.
    pub size: u32,
}

impl Cells {
    /// The values the specification prescribes when a node does not say.
    pub const DEFAULT: Cells = Cells { address: 2, size: 1 };
}

/// A validated device tree blob.
#[derive(Clone, Copy)]
pub struct Fdt<'a> {
    /// The whole blob, exactly as long as its header says.
    blob: &'a [u8],
    structure: &'a [u8],
    /// The strings block, checked to be UTF-8 ending in NUL: any property name offset that is a
    /// character boundary inside it starts a valid name, so names need no checking when read.
    strings: &'a str,
    /// The memory reservation entries, without the terminating all-zero entry.
    reservations: &'a [u8],
    /// Offset in `structure` of the root node's first token after its name.
    root_body: usize,
    boot_cpu: u32,
}

impl fmt::Debug for Fdt<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fdt")
            .field("total_size", &self.blob.len())
            .field("structure_size", &self.structure.len())
            .field("strings_size", &self.strings.len())
            .finish_non_exhaustive()
    }
}

/// One token of the structure block. Names stay raw until asked for: boot walks the tree a few
/// times, and under emulation every byte examined costs.
#[derive(Clone, Copy)]
enum Token<'a> {
    /// A node starts; its name (checked UTF-8 by [`Fdt::new`]).
    Begin(&'a [u8]),
    End,
    /// A property: its name's offset in the strings block, and its value.
    Prop {
        name: usize,
        value: &'a [u8],
    },
    Finish,
}

impl<'a> Fdt<'a> {
    /// Checks `blob` and returns a reader over it. `blob` may be longer than the tree; the extra
    /// bytes are ignored.
    pub fn new(blob: &'a [u8]) -> Result<Fdt<'a>> {
        let total = total_size(blob)?;
        if total < HEADER_SIZE {
            return Err(Error::BadLayout);
        }
        let blob = blob.get(..total).ok_or(Error::Truncated)?;
        // The header is ten big-endian u32 fields; `total >= HEADER_SIZE` makes every read succeed.
        let field = |index: usize| be32(blob, index * 4).ok_or(Error::Truncated);
        let version = field(5)?;
        let last_compatible_version = field(6)?;
        if version < 17 || last_compatible_version > 17 {
            return Err(Error::UnsupportedVersion);
        }
        let block = |offset: u32, size: u32| -> Result<&'a [u8]> {
            let start = usize::try_from(offset).map_err(|_| Error::BadLayout)?;
            let len = usize::try_from(size).map_err(|_| Error::BadLayout)?;
            let end = start.checked_add(len).ok_or(Error::BadLayout)?;
            blob.get(start..end).ok_or(Error::BadLayout)
        };
        let structure_offset = field(2)?;
        if !structure_offset.is_multiple_of(4) {
            return Err(Error::BadLayout);
        }
        let structure = block(structure_offset, field(9)?)?;
        let strings = block(field(3)?, field(8)?)?;
        let strings = core::str::from_utf8(strings).map_err(|_| Error::BadString)?;
        if !strings.is_empty() && !strings.ends_with('\0') {
            return Err(Error::BadString);
        }
        let reservations = Self::reservation_block(blob, field(4)?)?;

        let mut fdt = Fdt { blob, structure, strings, reservations, root_body: 0, boot_cpu: field(7)? };
        fdt.root_body = fdt.validate_structure()?;
        Ok(fdt)
    }

    /// Finds the reservation entries at `offset`: 16-byte (address, size) pairs up to an all-zero one.
    fn reservation_block(blob: &'a [u8], offset: u32) -> Result<&'a [u8]> {
        let start = usize::try_from(offset).map_err(|_| Error::BadLayout)?;
        if !start.is_multiple_of(8) || start < HEADER_SIZE {
            return Err(Error::BadLayout);
        }
        let mut end = start;
        loop {
            let address = be64(blob, end).ok_or(Error::BadLayout)?;
            let size = be64(blob, end + 8).ok_or(Error::BadLayout)?;
            if address == 0 && size == 0 {
                return blob.get(start..end).ok_or(Error::BadLayout);
            }
            end += 16;
        }
    }

    /// Walks the whole structure block once, so later walks can trust it. Returns the offset of the
    /// root node's body.
    fn validate_structure(&self) -> Result<usize> {
        let mut offset = 0;
        let mut depth = 0usize;
        let mut root_body = None;
        // Properties must come before a node's children: the node readers stop at the first child.
        let mut props_allowed = false;
        loop {
            let (token, next) = self.token_at(offset)?;
            offset = next;
            match token {
                Token::Begin(name) => {
                    core::str::from_utf8(name).map_err(|_| Error::BadString)?;
                    if depth == 0 {
                        if root_body.is_some() {
                            return Err(Error::BadStructure); // a second root
                        }
                        root_body = Some(next);
                    }
                    depth += 1;
                    if depth > MAX_DEPTH {
                        return Err(Error::TooDeep);
                    }
                    props_allowed = true;
                }
                Token::End => {
                    depth = depth.checked_sub(1).ok_or(Error::BadStructure)?;
                    props_allowed = false;
                }
                Token::Prop { .. } => {
                    if depth == 0 || !props_allowed {
                        return Err(Error::BadStructure);
                    }
                }
                Token::Finish => {
                    return match root_body {
                        Some(body) if depth == 0 => Ok(body),
                        _ => Err(Error::BadStructure),
                    };
                }
            }
        }
    }

    /// Decodes the token at `offset` (skipping NOPs) and returns it with the offset of the next one.
    fn token_at(&self, mut offset: usize) -> Result<(Token<'a>, usize)> {
        let structure = self.structure;
        loop {
            let token = be32(structure, offset).ok_or(Error::BadStructure)?;
            let body = offset + 4;
            return match token {
                TOKEN_NOP => {
                    offset = body;
                    continue;
                }
                TOKEN_BEGIN_NODE => {
                    let tail = structure.get(body..).ok_or(Error::BadStructure)?;
                    let len = tail.iter().position(|&b| b == 0).ok_or(Error::BadString)?;
                    let name = tail.get(..len).ok_or(Error::BadString)?;
                    let next = align4(body + len + 1).ok_or(Error::BadStructure)?;
                    Ok((Token::Begin(name), next))
                }
                TOKEN_END_NODE => Ok((Token::End, body)),
                TOKEN_PROP => {
                    let len = be32(structure, body).ok_or(Error::BadStructure)?;
                    let name = be32(structure, body + 4).ok_or(Error::BadStructure)?;
                    let len = usize::try_from(len).map_err(|_| Error::BadStructure)?;
                    let value_start = body + 8;
                    let value_end = value_start.checked_add(len).ok_or(Error::BadStructure)?;
                    let value = structure.get(value_start..value_end).ok_or(Error::BadStructure)?;
                    let name = usize::try_from(name).map_err(|_| Error::BadString)?;
                    if name >= self.strings.len() || !self.strings.is_char_boundary(name) {
                        return Err(Error::BadString);
                    }
                    let next = align4(value_end).ok_or(Error::BadStructure)?;
                    Ok((Token::Prop { name, value }, next))
                }
                TOKEN_END => Ok((Token::Finish, body)),
                _ => Err(Error::BadStructure),
            };
        }
    }

    /// Like [`Self::token_at`] for walks over a validated blob, where errors cannot occur; an error
    /// ends the walk as if the tree ended there.
    fn next_token(&self, offset: usize) -> (Token<'a>, usize) {
        self.token_at(offset).unwrap_or((Token::Finish, offset))
    }

    /// The property name at `offset` in the strings block (validated by [`Fdt::new`]).
    fn property_name(&self, offset: usize) -> &'a str {
        let tail = self.strings.get(offset..).unwrap_or("");
        tail.split_once('\0').map_or(tail, |(name, _)| name)
    }

    /// Whether the property name at `offset` is `name`, without scanning past `name`'s length.
    fn property_name_is(&self, offset: usize, name: &str) -> bool {
        let tail = self.strings.as_bytes().get(offset..).unwrap_or(&[]);
        tail.starts_with(name.as_bytes()) && tail.get(name.len()) == Some(&0)
    }

    /// The property called `name` among the properties starting at `offset` (a node's body).
    fn property_at(&self, mut offset: usize, name: &str) -> Option<Property<'a>> {
        loop {
            match self.next_token(offset) {
                (Token::Prop { name: at, value }, next) => {
                    if self.property_name_is(at, name) {
                        return Some(Property { name: self.property_name(at), value });
                    }
                    offset = next;
                }
                _ => return None,
            }
        }
    }

    /// `#address-cells`/`#size-cells` of the node whose body starts at `offset`, defaults filled in.
    fn cells_at(&self, mut offset: usize) -> Cells {
        let mut cells = Cells::DEFAULT;
        while let (Token::Prop { name, value }, next) = self.next_token(offset) {
            let value = if value.len() == 4 { be32(value, 0) } else { None };
            if self.property_name_is(name, "#address-cells") {
                cells.address = value.unwrap_or(Cells::DEFAULT.address);
            } else if self.property_name_is(name, "#size-cells") {
                cells.size = value.unwrap_or(Cells::DEFAULT.size);
            }
            offset = next;
        }
        cells
    }

    /// The blob's size in bytes, as its header declares: the memory a caller must keep intact.
    pub fn total_size(&self) -> usize {
        self.blob.len()
    }

    /// The bytes the tree actually uses: the header and its three blocks, up to the end of the last
    /// one. Loaders pad blobs (QEMU to 1 MiB); a copy of this many bytes, with its header's total
    /// size set to it, is the same tree.
    pub fn used_size(&self) -> usize {
        let base = self.blob.as_ptr() as usize;
        let end = |block: &[u8]| block.as_ptr() as usize - base + block.len();
        // The reservation block ends with a 16-byte all-zero entry that `reservations` leaves out.
        let reservations_end = end(self.reservations) + 16;
        end(self.structure).max(end(self.strings.as_bytes())).max(reservations_end).max(HEADER_SIZE)
    }

    /// The physical id of the CPU the boot loader booted on, from the header.
    pub fn boot_cpu_id(&self) -> u32 {
        self.boot_cpu
    }

    /// The root node, `/`.
    pub fn root(&self) -> Node<'a> {
        Node { fdt: *self, name: &[], body: self.root_body, parent: None }
    }

    /// Every node, depth first, the root included.
    pub fn nodes(&self) -> Nodes<'a> {
        Nodes { fdt: *self, offset: 0, depth: 0, bodies: [0; MAX_DEPTH], done: false }
    }

    /// The node at `path`: absolute (`/chosen`, `/soc/serial@1000`) or starting with an alias from
    /// `/aliases` (`serial0`). A path component without a unit address matches a node whose name
    /// has one (`/memory` finds `memory@40000000`).
    pub fn find_node(&self, path: &str) -> Option<Node<'a>> {
        let (mut node, rest) = match path.strip_prefix('/') {
            Some(rest) => (self.root(), rest),
            None => {
                let (alias, rest) = path.split_once('/').unwrap_or((path, ""));
                let target = self.root().child("aliases")?.property(alias)?.as_str()?;
                // An alias names an absolute path; anything else would recurse without end.
                let target = target.strip_prefix('/')?;
                let mut node = self.root();
                for component in target.split('/').filter(|c| !c.is_empty()) {
                    node = node.child(component)?;
                }
                (node, rest)
            }
        };
        for component in rest.split('/').filter(|c| !c.is_empty()) {
            node = node.child(component)?;
        }
        Some(node)
    }

    /// The first node (depth first) whose `compatible` list contains `compatible`.
    pub fn find_compatible(&self, compatible: &str) -> Option<Node<'a>> {
        self.nodes().find(|node| node.is_compatible(compatible))
    }

    /// The memory reservation block (`/memreserve/` entries): RAM the kernel must not use.
    pub fn reservations(&self) -> Reservations<'a> {
        Reservations { bytes: self.reservations }
    }
}

/// A node of the tree.
#[derive(Clone, Copy, Debug)]
pub struct Node<'a> {
    fdt: Fdt<'a>,
    /// The raw name (checked UTF-8).
    name: &'a [u8],
    /// Offset in the structure block of the node's first property or child.
    body: usize,
    /// The parent's body, whose `#address-cells`/`#size-cells` govern this node's `reg`; `None` for
    /// the root.
    parent: Option<usize>,
}

impl<'a> Node<'a> {
    /// The full name, unit address included (`memory@40000000`); empty for the root.
    pub fn name(&self) -> &'a str {
        core::str::from_utf8(self.name).unwrap_or("")
    }

    /// The name without its unit address (`memory`).
    pub fn base_name(&self) -> &'a str {
        let name = self.name();
        name.split_once('@').map_or(name, |(base, _)| base)
    }

    /// Whether the node is called `name`; without a unit address, `name` also matches
    /// `name@anything`.
    fn is_called(&self, name: &str) -> bool {
        let own = self.name;
        match own.strip_prefix(name.as_bytes()) {
            Some([]) => true,
            Some([b'@', ..]) => !name.contains('@'),
            _ => false,
        }
    }

    /// The node's properties, in blob order.
    pub fn properties(&self) -> Properties<'a> {
        Properties { fdt: self.fdt, offset: self.body }
    }

    /// The property called `name`.
    pub fn property(&self, name: &str) -> Option<Property<'a>> {
        self.fdt.property_at(self.body, name)
    }

    /// The node's direct children, in blob order.
    pub fn children(&self) -> Children<'a> {
        Children { fdt: self.fdt, offset: self.body, parent: self.body, done: false }
    }

    /// The child called `name`; without a unit address, `name` also matches `name@anything`.
    pub fn child(&self, name: &str) -> Option<Node<'a>> {
        self.children().find(|c| c.is_called(name))
    }

    /// `#address-cells`/`#size-cells` for this node's children, defaults filled in.
    pub fn child_cells(&self) -> Cells {
        self.fdt.cells_at(self.body)
    }

    /// Whether the `compatible` list contains `compatible` exactly.
    pub fn is_compatible(&self, compatible: &str) -> bool {
        self.property("compatible").is_some_and(|p| p.strings().any(|s| s == compatible))
    }

    /// Whether the node is usable: no `status`, or `status = "okay"` (or the old `"ok"`).
    pub fn is_enabled(&self) -> bool {
        match self.property("status") {
            None => true,
            Some(status) => matches!(status.as_str(), Some("okay" | "ok")),
        }
    }

    /// The `reg` entries, in the parent bus's address space (see the module docs). Empty when there
    /// is no `reg`, or when the parent uses more than two cells for addresses or sizes; a trailing
    /// partial entry is ignored.
    pub fn reg(&self) -> Reg<'a> {
        let Some(reg) = self.property("reg") else {
            return Reg { bytes: &[], cells: Cells::DEFAULT };
        };
        let cells = self.parent.map_or(Cells::DEFAULT, |parent| self.fdt.cells_at(parent));
        let bytes = if cells.address <= 2 && cells.size <= 2 { reg.value } else { &[] };
        Reg { bytes, cells }
    }
}

/// A property: a name and an uninterpreted value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Property<'a> {
    /// The property's name.
    pub name: &'a str,
    /// The raw value bytes.
    pub value: &'a [u8],
}

impl<'a> Property<'a> {
    /// The value as one string: NUL-terminated UTF-8 (text after an inner NUL is ignored).
    pub fn as_str(&self) -> Option<&'a str> {
        c_str(self.value, 0)
    }

    /// The value as a list of NUL-terminated strings (`compatible`); stops at the first invalid one.
    pub fn strings(&self) -> Strings<'a> {
        Strings { bytes: self.value }
    }

    /// The value as one big-endian 32-bit cell.
    pub fn as_u32(&self) -> Option<u32> {
        match self.value.len() {
            4 => be32(self.value, 0),
            _ => None,
        }
    }

    /// The value as a list of big-endian 32-bit cells (`interrupts`); a trailing partial cell is
    /// ignored.
    pub fn cells(&self) -> impl Iterator<Item = u32> + use<'a> {
        self.value.chunks_exact(4).map(|cell| u32::from_be_bytes([cell[0], cell[1], cell[2], cell[3]]))
    }

    /// The value as a 64-bit number: one or two big-endian cells.
    pub fn as_u64(&self) -> Option<u64> {
        match self.value.len() {
            4 => be32(self.value, 0).map(u64::from),
            8 => be64(self.value, 0),
            _ => None,
        }
    }
}

/// Iterator over every node; see [`Fdt::nodes`].
#[derive(Clone, Debug)]
pub struct Nodes<'a> {
    fdt: Fdt<'a>,
    offset: usize,
    depth: usize,
    /// `bodies[d]`: the body offset of the open node at depth `d` (the root is depth 0).
    bodies: [usize; MAX_DEPTH],
    done: bool,
}

impl<'a> Iterator for Nodes<'a> {
    type Item = Node<'a>;

    fn next(&mut self) -> Option<Node<'a>> {
        while !self.done {
            let (token, next) = self.fdt.next_token(self.offset);
            self.offset = next;
            match token {
                Token::Begin(name) => {
                    let parent = self.depth.checked_sub(1).and_then(|d| self.bodies.get(d).copied());
                    if let Some(slot) = self.bodies.get_mut(self.depth) {
                        *slot = next;
                    }
                    self.depth += 1;
                    return Some(Node { fdt: self.fdt, name, body: next, parent });
                }
                Token::End => self.depth = self.depth.saturating_sub(1),
                Token::Prop { .. } => {}
                Token::Finish => self.done = true,
            }
        }
        None
    }
}

/// Iterator over a node's children; see [`Node::children`].
#[derive(Clone, Debug)]
pub struct Children<'a> {
    fdt: Fdt<'a>,
    offset: usize,
    /// The parent's body offset.
    parent: usize,
    done: bool,
}

impl<'a> Iterator for Children<'a> {
    type Item = Node<'a>;

    fn next(&mut self) -> Option<Node<'a>> {
        while !self.done {
            let (token, next) = self.fdt.next_token(self.offset);
            match token {
                Token::Prop { .. } => self.offset = next,
                Token::Begin(name) => {
                    self.offset = self.skip_subtree(next);
                    return Some(Node { fdt: self.fdt, name, body: next, parent: Some(self.parent) });
                }
                Token::End | Token::Finish => self.done = true,
            }
        }
        None
    }
}

impl Children<'_> {
    /// Returns the offset just past the end of the node whose body starts at `offset`.
    fn skip_subtree(&self, mut offset: usize) -> usize {
        let mut depth = 1usize;
        loop {
            let (token, next) = self.fdt.next_token(offset);
            match token {
                Token::Begin(_) => depth += 1,
                Token::End => depth -= 1,
                Token::Prop { .. } => {}
                Token::Finish => return offset,
            }
            offset = next;
            if depth == 0 {
                return offset;
            }
        }
    }
}

/// Iterator over a node's properties; see [`Node::properties`].
#[derive(Clone, Debug)]
pub struct Properties<'a> {
    fdt: Fdt<'a>,
    offset: usize,
}

impl<'a> Iterator for Properties<'a> {
    type Item = Property<'a>;

    fn next(&mut self) -> Option<Property<'a>> {
        match self.fdt.next_token(self.offset) {
            (Token::Prop { name, value }, next) => {
                self.offset = next;
                Some(Property { name: self.fdt.property_name(name), value })
            }
            _ => None,
        }
    }
}

/// Iterator over a string-list property; see [`Property::strings`].
#[derive(Clone, Debug)]
pub struct Strings<'a> {
    bytes: &'a [u8],
}

impl<'a> Iterator for Strings<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let s = c_str(self.bytes, 0)?;
        self.bytes = self.bytes.get(s.len() + 1..).unwrap_or(&[]);
        Some(s)
    }
}

/// Iterator over `reg` entries; see [`Node::reg`].
#[derive(Clone, Debug)]
pub struct Reg<'a> {
    bytes: &'a [u8],
    cells: Cells,
}

impl Reg<'_> {
    /// Reads a number of `cells` (0, 1 or 2) 32-bit cells and advances.
    fn take(&mut self, cells: u32) -> Option<u64> {
        let value = match cells {
            0 => 0,
            1 => u64::from(be32(self.bytes, 0)?),
            2 => be64(self.bytes, 0)?,
            _ => return None,
        };
        self.bytes = self.bytes.get(cells as usize * 4..)?;
        Some(value)
    }
}

impl Iterator for Reg<'_> {
    type Item = Region;

    fn next(&mut self) -> Option<Region> {
        let entry = (self.cells.address + self.cells.size) as usize * 4;
        if entry == 0 || self.bytes.len() < entry {
            return None;
        }
        let address = self.take(self.cells.address)?;
        let size = self.take(self.cells.size)?;
        Some(Region { address, size })
    }
}

/// Iterator over the memory reservation block; see [`Fdt::reservations`].
#[derive(Clone, Debug)]
pub struct Reservations<'a> {
    bytes: &'a [u8],
}

impl Iterator for Reservations<'_> {
    type Item = Region;

    fn next(&mut self) -> Option<Region> {
        let region = Region { address: be64(self.bytes, 0)?, size: be64(self.bytes, 8)? };
        self.bytes = self.bytes.get(16..).unwrap_or(&[]);
        Some(region)
    }
}

/// The largest span of `ram` that overlaps none of `reserved`, shrunk to multiples of `align` (a
/// power of two). `None` when nothing of at least `align` bytes is left.
///
/// Boot code uses this to choose the heap: `ram` from the memory nodes, `reserved` holding the
/// kernel image, the blob itself and the reservations the tree lists. Both lists may be unsorted and
/// overlapping; empty regions are ignored.
pub fn largest_free_span(ram: &[Region], reserved: &[Region], align: u64) -> Option<Region> {
    let mask = align.checked_sub(1)?;
    if align & mask != 0 {
        return None;
    }
    let reserved = || reserved.iter().filter(|r| r.size > 0);
    let mut best: Option<Region> = None;
    for region in ram.iter().filter(|r| r.size > 0) {
        // A free span starts either at the start of RAM or where a reservation ends.
        let starts = core::iter::once(region.address).chain(reserved().map(|r| r.end()));
        for start in starts {
            if !region.contains(start) || reserved().any(|r| r.contains(start)) {
                continue;
            }
            let end = reserved().map(|r| r.address).filter(|&a| a > start).fold(region.end(), u64::min);
            let Some(start) = start.checked_add(mask).map(|s| s & !mask) else { continue };
            let end = end & !mask;
            if start < end && best.is_none_or(|b| end - start > b.size) {
                best = Some(Region { address: start, size: end - start });
            }
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    /// QEMU 7.2's device tree for `-M virt -cpu cortex-a72 -m 64M -append 'a "b c"'`, packed by
    /// `dtc -I dtb -O dtb` (QEMU pads the blob to 1 MiB).
    static QEMU_VIRT: &[u8] = include_bytes!("../testdata/qemu-virt.dtb");

    /// Builds blobs for tests: a structure written token by token, with a strings block.
    struct Builder {
        structure: Vec<u8>,
        strings: Vec<u8>,
        reservations: Vec<(u64, u64)>,
    }

    impl Builder {
        fn new() -> Self {
            Builder { structure: Vec::new(), strings: Vec::new(), reservations: Vec::new() }
        }

        fn token(&mut self, token: u32) -> &mut Self {
            self.structure.extend_from_slice(&token.to_be_bytes());
            self
        }

        fn pad(&mut self) {
            while !self.structure.len().is_multiple_of(4) {
                self.structure.push(0);
            }
        }

        fn begin(&mut self, name: &str) -> &mut Self {
            self.token(TOKEN_BEGIN_NODE);
            self.structure.extend_from_slice(name.as_bytes());
            self.structure.push(0);
            self.pad();
            self
        }

        fn end(&mut self) -> &mut Self {
            self.token(TOKEN_END_NODE)
        }

        fn prop(&mut self, name: &str, value: &[u8]) -> &mut Self {
            let offset = self.strings.len() as u32;
            self.strings.extend_from_slice(name.as_bytes());
            self.strings.push(0);
            self.token(TOKEN_PROP);
            self.structure.extend_from_slice(&(value.len() as u32).to_be_bytes());
            self.structure.extend_from_slice(&offset.to_be_bytes());
            self.structure.extend_from_slice(value);
            self.pad();
            self
        }

        fn prop_cells(&mut self, name: &str, cells: &[u32]) -> &mut Self {
            let value: Vec<u8> = cells.iter().flat_map(|c| c.to_be_bytes()).collect();
            self.prop(name, &value)
        }

        fn build(&mut self) -> Vec<u8> {
            let mut structure = self.structure.clone();
            structure.extend_from_slice(&TOKEN_END.to_be_bytes());
            let rsv_offset = HEADER_SIZE.next_multiple_of(8);
            let rsv_len = (self.reservations.len() + 1) * 16;
            let struct_offset = rsv_offset + rsv_len;
            let strings_offset = struct_offset + structure.len();
            let total = strings_offset + self.strings.len();
            let header = [
                MAGIC,
                total as u32,
                struct_offset as u32,
                strings_offset as u32,
                rsv_offset as u32,
                17,
                16,
                0,
                self.strings.len() as u32,
                structure.len() as u32,
            ];
            let mut blob: Vec<u8> = header.iter().flat_map(|f| f.to_be_bytes()).collect();
            blob.resize(rsv_offset, 0);
            for &(address, size) in &self.reservations {
                blob.extend_from_slice(&address.to_be_bytes());
                blob.extend_from_slice(&size.to_be_bytes());
            }
            blob.extend_from_slice(&[0; 16]);
            blob.extend_from_slice(&structure);
            blob.extend_from_slice(&self.strings);
            assert_eq!(blob.len(), total);
            blob
        }
    }

    fn set_header_field(blob: &mut [u8], index: usize, value: u32) {
        blob[index * 4..index * 4 + 4].copy_from_slice(&value.to_be_bytes());
    }

    #[test]
    fn reads_qemu_virt_memory_chosen_uart_and_psci() {
        let fdt = Fdt::new(QEMU_VIRT).expect("the QEMU fixture is valid");
        assert_eq!(fdt.total_size(), QEMU_VIRT.len());

        let root = fdt.root();
        assert_eq!(root.property("model").and_then(|p| p.as_str()), Some("linux,dummy-virt"));
        assert!(root.is_compatible("linux,dummy-virt"));
        assert_eq!(root.child_cells(), Cells { address: 2, size: 2 });

        let memory = fdt.find_node("/memory").expect("a memory node");
        assert_eq!(memory.name(), "memory@40000000");
        assert_eq!(memory.property("device_type").and_then(|p| p.as_str()), Some("memory"));
        let ram: Vec<Region> = memory.reg().collect();
        assert_eq!(ram, [Region { address: 0x4000_0000, size: 64 << 20 }]);

        let chosen = fdt.find_node("/chosen").expect("a chosen node");
        assert_eq!(chosen.property("bootargs").and_then(|p| p.as_str()), Some(r#"a "b c""#));
        let stdout = chosen.property("stdout-path").and_then(|p| p.as_str());
        assert_eq!(stdout, Some("/pl011@9000000"));

        let uart = fdt.find_node("/pl011@9000000").expect("the stdout node");
        assert!(uart.is_compatible("arm,pl011"));
        assert!(uart.is_enabled());
        assert_eq!(uart.reg().next(), Some(Region { address: 0x0900_0000, size: 0x1000 }));
        let first_pl011 = fdt.find_compatible("arm,pl011").expect("a pl011");
        assert_eq!(first_pl011.name(), "pl011@9000000");

        let psci = fdt.find_node("/psci").expect("a psci node");
        assert_eq!(psci.property("method").and_then(|p| p.as_str()), Some("hvc"));
        let compatible: Vec<&str> = psci.property("compatible").expect("compatible").strings().collect();
        assert_eq!(compatible, ["arm,psci-1.0", "arm,psci-0.2", "arm,psci"]);

        assert_eq!(fdt.reservations().count(), 0);
    }

    #[test]
    fn qemu_virt_cells_apply_to_children_at_every_depth() {
        let fdt = Fdt::new(QEMU_VIRT).expect("valid");
        // The GIC's child uses the GIC's own two-cell layout.
        let v2m = fdt.nodes().find(|n| n.name() == "v2m@8020000").expect("the v2m frame");
        assert_eq!(v2m.reg().next(), Some(Region { address: 0x0802_0000, size: 0x1000 }));
        // `cpus` has #address-cells = 1 and #size-cells = 0.
        let cpu = fdt.find_node("/cpus/cpu@0").expect("cpu 0");
        assert_eq!(cpu.reg().next(), Some(Region { address: 0, size: 0 }));
        // PCI uses three address cells, which `reg` does not decode.
        let pcie = fdt.find_node("/pcie@10000000").expect("pcie");
        assert_eq!(pcie.reg().next(), Some(Region { address: 0x40_1000_0000, size: 0x1000_0000 }));
        // Two entries in one `reg`.
        let flash: Vec<Region> = fdt.find_node("/flash").expect("flash").reg().collect();
        assert_eq!(flash.len(), 2);
    }

    #[test]
    fn nodes_visits_every_node_once_depth_first() {
        let fdt = Fdt::new(QEMU_VIRT).expect("valid");
        let names: Vec<&str> = fdt.nodes().map(|n| n.name()).collect();
        assert_eq!(names.first(), Some(&""));
        assert_eq!(names.iter().filter(|n| n.starts_with("virtio_mmio@")).count(), 32);
        let cpus = names.iter().position(|&n| n == "cpus").expect("cpus");
        assert_eq!(&names[cpus..cpus + 6], ["cpus", "cpu-map", "socket0", "cluster0", "core0", "cpu@0"]);
        let root_children = fdt.root().children().count();
        assert!(root_children > 40, "{root_children}");
    }

    #[test]
    fn find_node_handles_missing_nodes_and_exact_unit_addresses() {
        let fdt = Fdt::new(QEMU_VIRT).expect("valid");
        assert!(fdt.find_node("/").is_some());
        assert!(fdt.find_node("/nonexistent").is_none());
        assert!(fdt.find_node("/memory@50000000").is_none());
        assert!(fdt.find_node("/memory@40000000").is_some());
        assert!(fdt.find_node("/cpus/cpu-map/socket0/cluster0/core0").is_some());
        // No /aliases node in QEMU's tree.
        assert!(fdt.find_node("serial0").is_none());
    }

    #[test]
    fn aliases_resolve_to_absolute_paths() {
        let blob = Builder::new()
            .begin("")
            .begin("aliases")
            .prop("serial0", b"/soc/uart@1000\0")
            .prop("bad", b"relative\0")
            .end()
            .begin("soc")
            .begin("uart@1000")
            .prop("compatible", b"arm,pl011\0arm,primecell\0")
            .end()
            .end()
            .end()
            .build();
        let fdt = Fdt::new(&blob).expect("valid");
        assert_eq!(fdt.find_node("serial0").map(|n| n.name()), Some("uart@1000"));
        assert!(fdt.find_node("bad").is_none());
        assert!(fdt.find_node("missing").is_none());
    }

    #[test]
    fn reservations_and_cells_defaults() {
        let mut builder = Builder::new();
        builder.reservations = vec![(0x4800_0000, 0x10_0000), (0, 0x1000)];
        let blob = builder
            .begin("")
            .begin("memory@0")
            .prop_cells("reg", &[0, 0, 0x1000_0000])
            .end()
            .begin("bus")
            .prop_cells("#address-cells", &[1])
            .prop_cells("#size-cells", &[0])
            .begin("dev@7")
            .prop_cells("reg", &[7])
            .end()
            .end()
            .end()
            .build();
        let fdt = Fdt::new(&blob).expect("valid");
        let reserved: Vec<Region> = fdt.reservations().collect();
        assert_eq!(reserved, [Region { address: 0x4800_0000, size: 0x10_0000 }, Region { address: 0, size: 0x1000 }]);
        // The root has no #address-cells: the defaults (2, 1) apply to its children.
        let memory = fdt.find_node("/memory").expect("memory");
        assert_eq!(memory.reg().collect::<Vec<_>>(), [Region { address: 0, size: 0x1000_0000 }]);
        let dev = fdt.find_node("/bus/dev@7").expect("dev");
        assert_eq!(dev.reg().collect::<Vec<_>>(), [Region { address: 7, size: 0 }]);
    }

    #[test]
    fn odd_property_values_are_handled() {
        let blob = Builder::new()
            .begin("")
            .prop("unterminated", b"abc")
            .prop("not-utf8", b"\xff\xfe\0")
            .prop("empty", b"")
            .prop("strings", b"one\0two\0\xff\0four\0")
            .prop_cells("wide", &[1, 2, 3])
            .prop_cells("#address-cells", &[3])
            .begin("pci@0")
            .prop_cells("reg", &[1, 2, 3, 4])
            .end()
            .end()
            .build();
        let fdt = Fdt::new(&blob).expect("valid");
        let root = fdt.root();
        let prop = |name| root.property(name).expect(name);
        assert_eq!(prop("unterminated").as_str(), None);
        assert_eq!(prop("not-utf8").as_str(), None);
        assert_eq!(prop("empty").as_str(), None);
        assert_eq!(prop("empty").as_u32(), None);
        assert_eq!(prop("strings").strings().collect::<Vec<_>>(), ["one", "two"]);
        assert_eq!(prop("wide").as_u64(), None);
        assert_eq!(prop("#address-cells").as_u64(), Some(3));
        assert_eq!(fdt.find_node("/pci").expect("pci").reg().count(), 0);
    }

    #[test]
    fn partial_reg_entries_are_ignored() {
        let blob = Builder::new()
            .begin("")
            .prop_cells("#address-cells", &[2])
            .prop_cells("#size-cells", &[2])
            .begin("dev")
            .prop_cells("reg", &[0, 0x1000, 0, 0x10, 0, 0x2000])
            .end()
            .end()
            .build();
        let fdt = Fdt::new(&blob).expect("valid");
        let dev = fdt.find_node("/dev").expect("dev");
        assert_eq!(dev.reg().collect::<Vec<_>>(), [Region { address: 0x1000, size: 0x10 }]);
    }

    #[test]
    fn rejects_bad_magic_and_short_input() {
        assert_eq!(Fdt::new(&[]).err(), Some(Error::Truncated));
        assert_eq!(Fdt::new(&QEMU_VIRT[..7]).err(), Some(Error::Truncated));
        assert_eq!(total_size(&QEMU_VIRT[..8]), Ok(QEMU_VIRT.len()));
        let mut blob = QEMU_VIRT.to_vec();
        blob[0] ^= 1;
        assert_eq!(Fdt::new(&blob).err(), Some(Error::BadMagic));
        assert_eq!(total_size(&blob).err(), Some(Error::BadMagic));
    }

    #[test]
    fn rejects_every_truncation() {
        for len in 0..QEMU_VIRT.len() {
            assert!(Fdt::new(&QEMU_VIRT[..len]).is_err(), "accepted {len} bytes");
        }
    }

    #[test]
    fn a_copy_of_the_used_bytes_is_the_same_tree() {
        // The test blob is packed; pad it to 1 MiB as QEMU hands it over.
        let mut padded = QEMU_VIRT.to_vec();
        padded.resize(1 << 20, 0);
        padded[4..8].copy_from_slice(&(1u32 << 20).to_be_bytes());
        let fdt = Fdt::new(&padded).expect("valid");
        let used = fdt.used_size();
        assert_eq!(used, QEMU_VIRT.len(), "the packed blob is exactly the used bytes");
        let mut copy = padded[..used].to_vec();
        copy[4..8].copy_from_slice(&u32::try_from(used).expect("small").to_be_bytes());
        let copy = Fdt::new(&copy).expect("the used bytes are a whole tree");
        assert_eq!(copy.used_size(), used);
        let bootargs =
            |fdt: &Fdt<'_>| fdt.find_node("/chosen").and_then(|c| c.property("bootargs")?.as_str().map(String::from));
        assert_eq!(bootargs(&copy), bootargs(&fdt));
        assert_eq!(copy.nodes().count(), fdt.nodes().count());
        // One byte fewer cuts a block short.
        let mut short = QEMU_VIRT[..used - 1].to_vec();
        short[4..8].copy_from_slice(&u32::try_from(used - 1).expect("small").to_be_bytes());
        assert!(Fdt::new(&short).is_err());
    }

    #[test]
    fn accepts_trailing_bytes_beyond_total_size() {
        let mut blob = QEMU_VIRT.to_vec();
        blob.extend_from_slice(&[0xff; 64]);
        assert_eq!(Fdt::new(&blob).expect("valid").total_size(), QEMU_VIRT.len());
    }

    #[test]
    fn rejects_out_of_range_offsets() {
        let cases = [
            (1, HEADER_SIZE as u32 - 1, Error::BadLayout), // totalsize smaller than a header
            (1, u32::MAX, Error::Truncated),               // totalsize beyond the bytes
            (2, u32::MAX - 2, Error::BadLayout),           // struct offset, misaligned and huge
            (2, 0x1_0000, Error::BadLayout),               // struct offset past the end
            (3, u32::MAX, Error::BadLayout),               // strings offset
            (4, u32::MAX - 7, Error::BadLayout),           // reservation block offset
            (4, 4, Error::BadLayout),                      // reservations inside the header
            (5, 16, Error::UnsupportedVersion),
            (6, 18, Error::UnsupportedVersion),
            (8, u32::MAX, Error::BadLayout), // strings size
            (9, u32::MAX, Error::BadLayout), // struct size
        ];
        for (field, value, expected) in cases {
            let mut blob = QEMU_VIRT.to_vec();
            set_header_field(&mut blob, field, value);
            assert_eq!(Fdt::new(&blob).err(), Some(expected), "field {field} = {value:#x}");
        }
    }

    #[test]
    fn rejects_malformed_structure() {
        let unbalanced = Builder::new().begin("").begin("child").end().build();
        assert_eq!(Fdt::new(&unbalanced).err(), Some(Error::BadStructure));
        let two_roots = Builder::new().begin("").end().begin("").end().build();
        assert_eq!(Fdt::new(&two_roots).err(), Some(Error::BadStructure));
        let no_root = Builder::new().build();
        assert_eq!(Fdt::new(&no_root).err(), Some(Error::BadStructure));
        let stray_end = Builder::new().end().build();
        assert_eq!(Fdt::new(&stray_end).err(), Some(Error::BadStructure));
        let prop_outside = Builder::new().prop("x", b"").begin("").end().build();
        assert_eq!(Fdt::new(&prop_outside).err(), Some(Error::BadStructure));
        let prop_after_child = Builder::new().begin("").begin("a").end().prop("x", b"").end().build();
        assert_eq!(Fdt::new(&prop_after_child).err(), Some(Error::BadStructure));
        let unknown_token = Builder::new().begin("").token(7).end().build();
        assert_eq!(Fdt::new(&unknown_token).err(), Some(Error::BadStructure));
        let mut deep = Builder::new();
        for _ in 0..=MAX_DEPTH {
            deep.begin("n");
        }
        for _ in 0..=MAX_DEPTH {
            deep.end();
        }
        assert_eq!(Fdt::new(&deep.build()).err(), Some(Error::TooDeep));
        let nops = Builder::new().token(TOKEN_NOP).begin("").token(TOKEN_NOP).end().build();
        assert!(Fdt::new(&nops).is_ok());
    }

    #[test]
    fn rejects_bad_strings_and_oversized_properties() {
        let mut bad_name = Builder::new();
        bad_name.begin("").prop("ok", b"").end();
        // Point the property's name offset past the strings block.
        let name_offset_at = 16; // BEGIN, the root's empty name (padded), PROP, len
        bad_name.structure[name_offset_at..name_offset_at + 4].copy_from_slice(&99u32.to_be_bytes());
        assert_eq!(Fdt::new(&bad_name.build()).err(), Some(Error::BadString));

        let mut long_value = Builder::new();
        long_value.begin("").prop("p", b"1234").end();
        let len_at = 12; // BEGIN, the root's empty name (padded), PROP
        long_value.structure[len_at..len_at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(Fdt::new(&long_value.build()).err(), Some(Error::BadStructure));

        let mut bad_node_name = Builder::new();
        bad_node_name.begin("").begin("x\u{e9}").end().end();
        bad_node_name.structure[12] = 0xff; // the first byte of the child's name
        assert_eq!(Fdt::new(&bad_node_name.build()).err(), Some(Error::BadString));
    }

    #[test]
    fn strings_block_must_be_utf8_ending_in_nul_and_names_start_on_characters() {
        let mut unterminated = Builder::new();
        unterminated.begin("").prop("name", b"").end();
        unterminated.strings.pop(); // drop the NUL ending "name"
        assert_eq!(Fdt::new(&unterminated.build()).err(), Some(Error::BadString));

        let mut not_utf8 = Builder::new();
        not_utf8.begin("").prop("name", b"").end();
        not_utf8.strings.extend_from_slice(b"\xff\0");
        assert_eq!(Fdt::new(&not_utf8.build()).err(), Some(Error::BadString));

        // A name offset pointing into the middle of "é" (two bytes).
        let mut mid_char = Builder::new();
        mid_char.begin("").prop("\u{e9}x", b"").end();
        let name_offset_at = 16;
        mid_char.structure[name_offset_at..name_offset_at + 4].copy_from_slice(&1u32.to_be_bytes());
        assert_eq!(Fdt::new(&mid_char.build()).err(), Some(Error::BadString));
    }

    #[test]
    fn properties_report_their_names_and_shared_name_prefixes_do_not_match() {
        let blob = Builder::new()
            .begin("")
            .prop("reg-names", b"a\0")
            .prop("reg", b"")
            .prop("status", b"disabled\0")
            .begin("memory@0")
            .end()
            .begin("memory-controller")
            .end()
            .end()
            .build();
        let fdt = Fdt::new(&blob).expect("valid");
        let root = fdt.root();
        let names: Vec<&str> = root.properties().map(|p| p.name).collect();
        assert_eq!(names, ["reg-names", "reg", "status"]);
        assert_eq!(root.property("reg").map(|p| p.value.len()), Some(0));
        assert_eq!(root.property("reg").map(|p| p.name), Some("reg"));
        assert!(root.property("re").is_none());
        assert!(!root.is_enabled());
        // "memory" matches "memory@0" but not "memory-controller".
        assert_eq!(fdt.find_node("/memory").map(|n| n.name()), Some("memory@0"));
        assert_eq!(fdt.find_node("/memory-controller").map(|n| n.base_name()), Some("memory-controller"));
        assert!(fdt.find_node("/memory@0/x").is_none());
    }

    #[test]
    fn never_panics_on_corrupted_bytes() {
        // Flip bytes of the QEMU blob one at a time (all of the header and the first tokens, then
        // every fifth byte, which still hits every position within a 4-byte token); every outcome
        // must be an Ok or an Err, and an accepted blob must survive a full walk.
        for index in (0..256).chain((256..QEMU_VIRT.len()).step_by(5)) {
            let mut blob = QEMU_VIRT.to_vec();
            blob[index] ^= 0xff;
            if let Ok(fdt) = Fdt::new(&blob) {
                for node in fdt.nodes() {
                    let _ = node.reg().count();
                    for p in node.properties() {
                        let _ = (p.as_str(), p.as_u64(), p.strings().count());
                    }
                }
                let _ = fdt.root().children().count();
                let _ = fdt.find_node("/chosen");
                let _ = fdt.find_node("serial0/x");
                let _ = fdt.reservations().count();
            }
        }
    }

    fn r(address: u64, size: u64) -> Region {
        Region { address, size }
    }

    #[test]
    fn free_span_avoids_kernel_and_blob_like_qemu_virt() {
        let ram = [r(0x4000_0000, 64 << 20)];
        let kernel = r(0x4000_0000, 0x3_0000 + 0x20_0000); // boot stub, then the image
        let dtb = r(0x4200_0000, 0x10_0000);
        let heap = largest_free_span(&ram, &[kernel, dtb], 4096).expect("free RAM");
        assert_eq!(heap, r(0x4210_0000, 0x4400_0000 - 0x4210_0000));
        let heap = largest_free_span(&ram, &[dtb, kernel], 4096).expect("order does not matter");
        assert_eq!(heap.address, 0x4210_0000);
    }

    #[test]
    fn free_span_aligns_and_handles_overlaps_and_edges() {
        let ram = [r(0x1000, 0x10_0000), r(0x100_0000, 0x8000)];
        // Overlapping reservations covering most of the first region.
        let reserved = [r(0x800, 0x1000), r(0x1_0000, 0xf_1000), r(0x2_0000, 0x1000), r(0, 0)];
        let span = largest_free_span(&ram, &reserved, 0x1000).expect("free");
        // [0x1800, 0x1_0000) aligns to [0x2000, 0x1_0000): 0xe000 bytes, more than the 0x8000 region.
        assert_eq!(span, r(0x2000, 0xe000));
        // Everything reserved.
        assert_eq!(largest_free_span(&ram, &[r(0, u64::MAX)], 0x1000), None);
        // Nothing reserved, region at the very top of the address space.
        let top = [r(u64::MAX - 0x2fff, 0x3000)];
        assert_eq!(largest_free_span(&top, &[], 0x1000), Some(r(u64::MAX - 0x2fff, 0x2000)));
        // Bad alignment and no RAM.
        assert_eq!(largest_free_span(&ram, &[], 3), None);
        assert_eq!(largest_free_span(&ram, &[], 0), None);
        assert_eq!(largest_free_span(&[], &[], 16), None);
        // Spans smaller than the alignment vanish.
        assert_eq!(largest_free_span(&[r(0x10, 0x20)], &[], 0x1000), None);
    }
}
