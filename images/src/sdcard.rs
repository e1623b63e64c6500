//! SD-card images for the Raspberry Pis: an MBR partition table with one FAT32 partition holding
//! what the Pi firmware boots.
//!
//! The card holds `config.txt` (64-bit mode, `kernel8.img`, the UART), `kernel8.img` (the
//! appliance's kernel), `cmdline.txt` (the manifest's arguments, which the firmware passes in the
//! device tree's `/chosen/bootargs`), the signed `.mast` image and its manifest as
//! `mast-manifest.toml`. The firmware itself (Broadcom's closed `start*.elf`, `bootcode.bin`, …)
//! cannot be redistributed here: [`firmware_files`] names what the user copies from the Raspberry
//! Pi firmware repository, or [`write_card`] takes it from a directory they downloaded.
//!
//! Layout: 1 MiB of MBR and alignment gap, then a 256 MiB FAT32 partition (type 0x0c, FAT32 with
//! LBA), the size Raspberry Pi OS uses for its boot partition. The file is sparse where nothing was
//! written. Files carry the FAT epoch (1980-01-01) as their time, so the same inputs give the same
//! card.
//!
//! # Not supported
//! - Partitions for data, GPT, and cards for boards other than the Pis.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Read, Seek, SeekFrom, Write},
    path::{Path, PathBuf},
};

use boot_contract::board::{Board, BoardKind};

/// Bytes per sector, for the partition table.
const SECTOR: u64 = 512;
/// The partition's first sector: 1 MiB in, the alignment SD cards are erased in.
const PARTITION_START_SECTOR: u64 = 2048;
/// The FAT32 partition's size.
pub const PARTITION_BYTES: u64 = 256 << 20;
/// MBR partition type: FAT32 addressed by LBA.
const TYPE_FAT32_LBA: u8 = 0x0c;
/// The volume label, padded to 11 bytes as FAT requires.
const VOLUME_LABEL: [u8; 11] = *b"MAST-BOOT  ";

/// Where the firmware files come from.
pub const FIRMWARE_SOURCE: &str = "https://github.com/raspberrypi/firmware/tree/master/boot";

/// Why a card could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum SdCardError {
    #[error("SD cards are for the Raspberry Pis (rpi3, rpi4), not {0}")]
    NotAPi(&'static str),
    #[error("{action} {path}: {source}")]
    Io { action: &'static str, path: PathBuf, source: io::Error },
    #[error("the firmware directory {dir} lacks {file} (download it from {FIRMWARE_SOURCE})")]
    MissingFirmware { dir: PathBuf, file: &'static str },
    #[error("{path} has no MBR with a FAT partition (no 0x55aa signature or no partition)")]
    NoPartition { path: PathBuf },
}

/// The firmware files a board needs beside the card's own, as paths in the boot partition.
pub fn firmware_files(board: &Board) -> Result<&'static [&'static str], SdCardError> {
    match board.kind {
        // bootcode.bin is the Pi 3's second-stage loader (the Pi 4 has it in EEPROM). The B+ has its
        // own tree; the firmware picks the one matching the board.
        BoardKind::Rpi3 => Ok(&[
            "bootcode.bin",
            "start.elf",
            "fixup.dat",
            "bcm2710-rpi-3-b.dtb",
            "bcm2710-rpi-3-b-plus.dtb",
            "overlays/disable-bt.dtbo",
        ]),
        BoardKind::Rpi4 => Ok(&["start4.elf", "fixup4.dat", "bcm2711-rpi-4-b.dtb", "overlays/disable-bt.dtbo"]),
        BoardKind::Virt => Err(SdCardError::NotAPi(board.name)),
    }
}

/// The card's `config.txt` for `board`.
pub fn config_txt(board: &Board, app: &str) -> String {
    format!(
        "# Written by `cargo xtask image sdcard {app} --board {board}`.\n\
         # 64-bit mode, booting the appliance's kernel at 0x80000.\n\
         arm_64bit=1\n\
         kernel=kernel8.img\n\
         # The appliance's console is the PL011 (uart0): have the firmware set it up at 115200 8N1 and\n\
         # route it to GPIO 14 (TXD, pin 8) and 15 (RXD, pin 10) instead of the Bluetooth chip.\n\
         enable_uart=1\n\
         dtoverlay=disable-bt\n",
        board = board.name
    )
}

/// The files of a card: path in the partition (`/`-separated, at most one directory deep) and bytes.
pub type CardFiles = Vec<(String, Vec<u8>)>;

/// Adds the firmware files for `board` from `dir` to `files`.
pub fn add_firmware(board: &Board, dir: &Path, files: &mut CardFiles) -> Result<(), SdCardError> {
    for &name in firmware_files(board)? {
        let path = dir.join(name);
        if !path.is_file() {
            return Err(SdCardError::MissingFirmware { dir: dir.to_owned(), file: name });
        }
        let bytes = fs::read(&path).map_err(|source| SdCardError::Io { action: "reading", path, source })?;
        files.push((name.to_owned(), bytes));
    }
    Ok(())
}

/// A byte range of a file, seen as a whole disk: what the FAT library formats and fills.
struct Partition<'a> {
    file: &'a mut File,
    start: u64,
    len: u64,
    position: u64,
}

impl Partition<'_> {
    fn room(&self, want: usize) -> usize {
        want.min(usize::try_from(self.len.saturating_sub(self.position)).unwrap_or(usize::MAX))
    }
}

impl Read for Partition<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.room(buf.len());
        self.file.seek(SeekFrom::Start(self.start + self.position))?;
        let read = self.file.read(&mut buf[..n])?;
        self.position += read as u64;
        Ok(read)
    }
}

impl Write for Partition<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.room(buf.len());
        if n == 0 && !buf.is_empty() {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "write past the end of the partition"));
        }
        self.file.seek(SeekFrom::Start(self.start + self.position))?;
        let written = self.file.write(&buf[..n])?;
        self.position += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Seek for Partition<'_> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let target = match to {
            SeekFrom::Start(at) => Some(at),
            SeekFrom::End(delta) => self.len.checked_add_signed(delta),
            SeekFrom::Current(delta) => self.position.checked_add_signed(delta),
        };
        match target {
            Some(at) if at <= self.len => {
                self.position = at;
                Ok(at)
            }
            _ => Err(io::Error::new(io::ErrorKind::InvalidInput, "seek outside the partition")),
        }
    }
}

/// The 512-byte MBR: one FAT32 (LBA) partition, marked bootable, with CHS fields set to the
/// "use LBA" maximum as modern tools do.
fn mbr() -> [u8; 512] {
    let mut sector = [0u8; 512];
    // A fixed disk signature, so the same inputs give the same card.
    sector[440..444].copy_from_slice(b"MAST");
    let entry = &mut sector[446..462];
    entry[0] = 0x80;
    entry[1..4].copy_from_slice(&[0xfe, 0xff, 0xff]);
    entry[4] = TYPE_FAT32_LBA;
    entry[5..8].copy_from_slice(&[0xfe, 0xff, 0xff]);
    entry[8..12].copy_from_slice(&(PARTITION_START_SECTOR as u32).to_le_bytes());
    entry[12..16].copy_from_slice(&((PARTITION_BYTES / SECTOR) as u32).to_le_bytes());
    sector[510] = 0x55;
    sector[511] = 0xaa;
    sector
}

fn io_error<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> SdCardError + 'a {
    move |source| SdCardError::Io { action, path: path.to_owned(), source }
}

/// Writes a card image to `out`: the MBR, then a freshly formatted FAT32 partition holding `files`.
pub fn write_card(out: &Path, files: &[(String, Vec<u8>)]) -> Result<(), SdCardError> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(out)
        .map_err(io_error("creating", out))?;
    let start = PARTITION_START_SECTOR * SECTOR;
    file.set_len(start + PARTITION_BYTES).map_err(io_error("sizing", out))?;
    file.write_all(&mbr()).map_err(io_error("writing the partition table of", out))?;

    let mut partition = Partition { file: &mut file, start, len: PARTITION_BYTES, position: 0 };
    let options = fatfs::FormatVolumeOptions::new().fat_type(fatfs::FatType::Fat32).volume_label(VOLUME_LABEL);
    fatfs::format_volume(&mut partition, options).map_err(io_error("formatting FAT32 in", out))?;
    partition.position = 0;
    let fs =
        fatfs::FileSystem::new(&mut partition, fatfs::FsOptions::new()).map_err(io_error("opening FAT in", out))?;
    let root = fs.root_dir();
    for (path, bytes) in files {
        if let Some((dir, _)) = path.rsplit_once('/')
            && root.open_dir(dir).is_err()
        {
            root.create_dir(dir).map_err(io_error("creating a directory in", out))?;
        }
        let mut fat_file = root.create_file(path).map_err(io_error("creating a file in", out))?;
        fat_file.truncate().map_err(io_error("truncating a file in", out))?;
        fat_file.write_all(bytes).map_err(io_error("writing a file in", out))?;
    }
    drop(root);
    fs.unmount().map_err(io_error("finishing the FAT in", out))?;
    file.sync_all().map_err(io_error("syncing", out))
}

/// Reads every file of a card written by [`write_card`] (or any MBR card whose first partition is
/// FAT), with `/`-separated paths, sorted.
pub fn read_card(path: &Path) -> Result<CardFiles, SdCardError> {
    let mut file = File::open(path).map_err(io_error("opening", path))?;
    let mut sector = [0u8; 512];
    file.read_exact(&mut sector).map_err(io_error("reading", path))?;
    let no_partition = || SdCardError::NoPartition { path: path.to_owned() };
    if sector[510..512] != [0x55, 0xaa] {
        return Err(no_partition());
    }
    let word = |at: usize| u64::from(u32::from_le_bytes([sector[at], sector[at + 1], sector[at + 2], sector[at + 3]]));
    let (first, count) = (word(454), word(458));
    if count == 0 {
        return Err(no_partition());
    }
    let mut partition = Partition { file: &mut file, start: first * SECTOR, len: count * SECTOR, position: 0 };
    let fs =
        fatfs::FileSystem::new(&mut partition, fatfs::FsOptions::new()).map_err(io_error("reading FAT in", path))?;
    let mut files = Vec::new();
    let mut pending = vec![(String::new(), fs.root_dir())];
    while let Some((prefix, dir)) = pending.pop() {
        for entry in dir.iter() {
            let entry = entry.map_err(io_error("listing", path))?;
            let name = entry.file_name();
            if name == "." || name == ".." {
                continue;
            }
            let full = if prefix.is_empty() { name } else { format!("{prefix}/{name}") };
            if entry.is_dir() {
                pending.push((full, entry.to_dir()));
            } else {
                let mut bytes = Vec::new();
                entry.to_file().read_to_end(&mut bytes).map_err(io_error("reading a file in", path))?;
                files.push((full, bytes));
            }
        }
    }
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_card_reads_back_with_its_files_and_partition_table() {
        let dir = tempfile::tempdir().expect("temp dir");
        let card = dir.path().join("card.img");
        let kernel: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let files: CardFiles = vec![
            ("config.txt".into(), config_txt(&boot_contract::board::RPI3, "hello").into_bytes()),
            ("kernel8.img".into(), kernel.clone()),
            ("mast-manifest.toml".into(), b"name = \"hello\"\n".to_vec()),
            ("overlays/disable-bt.dtbo".into(), vec![0xd0, 0x0d, 0xfe, 0xed]),
        ];
        write_card(&card, &files).expect("card written");

        let bytes = fs::read(&card).expect("card");
        assert_eq!(bytes.len() as u64, PARTITION_START_SECTOR * SECTOR + PARTITION_BYTES);
        assert_eq!(&bytes[510..512], &[0x55, 0xaa]);
        assert_eq!(bytes[446 + 4], TYPE_FAT32_LBA);
        // The FAT32 boot sector at the partition's start says so itself.
        let boot = &bytes[(PARTITION_START_SECTOR * SECTOR) as usize..][..512];
        assert_eq!(&boot[82..90], b"FAT32   ");
        assert_eq!(&boot[510..512], &[0x55, 0xaa]);

        let mut expected = files.clone();
        expected.sort();
        assert_eq!(read_card(&card).expect("card reads back"), expected);
    }

    #[test]
    fn config_txt_boots_64_bit_with_the_uart() {
        let config = config_txt(&boot_contract::board::RPI4, "hello");
        for line in ["arm_64bit=1", "kernel=kernel8.img", "enable_uart=1"] {
            assert!(config.lines().any(|l| l == line), "{line} missing from:\n{config}");
        }
    }

    #[test]
    fn firmware_lists_name_each_pis_files() {
        let pi3 = firmware_files(&boot_contract::board::RPI3).expect("a Pi");
        assert!(pi3.contains(&"bootcode.bin") && pi3.contains(&"start.elf") && pi3.contains(&"bcm2710-rpi-3-b.dtb"));
        let pi4 = firmware_files(&boot_contract::board::RPI4).expect("a Pi");
        assert!(pi4.contains(&"start4.elf") && pi4.contains(&"fixup4.dat") && pi4.contains(&"bcm2711-rpi-4-b.dtb"));
        assert!(!pi4.contains(&"bootcode.bin"));
        assert!(matches!(firmware_files(&boot_contract::board::VIRT), Err(SdCardError::NotAPi("virt"))));
    }

    #[test]
    fn missing_firmware_is_named() {
        let dir = tempfile::tempdir().expect("temp dir");
        let err = add_firmware(&boot_contract::board::RPI4, dir.path(), &mut Vec::new()).expect_err("empty dir");
        assert!(err.to_string().contains("start4.elf") && err.to_string().contains(FIRMWARE_SOURCE), "{err}");
    }

    #[test]
    fn garbage_is_not_a_card() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("junk.img");
        fs::write(&path, vec![0x5a; 4096]).expect("junk");
        assert!(matches!(read_card(&path), Err(SdCardError::NoPartition { .. })));
    }
}
