//! A checkpoint as one file: a ustar archive of timm's `config.json` and
//! `model.safetensors`. The server's export writes it and the browser's in-page inference
//! reads it, with this one implementation (plain POSIX ustar, which `tar` and Python's
//! `tarfile` read too).

use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};

const BLOCK: usize = 512;

/// The archive of `ck`: `config.json` then `model.safetensors`, mode 0644, time 0.
pub fn to_tar(ck: &Checkpoint) -> Result<Vec<u8>> {
    let mut out = vec![];
    append(&mut out, "config.json", ck.config.to_hub_json().as_bytes())?;
    append(&mut out, "model.safetensors", &ck.safetensors_bytes()?)?;
    out.resize(out.len() + 2 * BLOCK, 0);
    Ok(out)
}

/// The checkpoint in an archive [`to_tar`] wrote (or any ustar with the two files).
pub fn from_tar(tar: &[u8]) -> Result<Checkpoint> {
    let missing = |name: &str| Error::Checkpoint(format!("the archive has no {name}"));
    let config = entry(tar, "config.json")?.ok_or_else(|| missing("config.json"))?;
    let weights = entry(tar, "model.safetensors")?.ok_or_else(|| missing("model.safetensors"))?;
    let config = std::str::from_utf8(config)
        .map_err(|e| Error::Checkpoint(format!("config.json is not UTF-8: {e}")))?;
    Checkpoint::from_bytes(config, weights)
}

fn octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    let text = format!("{value:0digits$o}");
    field[..digits].copy_from_slice(text.as_bytes());
    field[digits] = 0;
}

fn append(out: &mut Vec<u8>, name: &str, data: &[u8]) -> Result<()> {
    if name.len() >= 100 {
        return Err(Error::Invalid(format!("tar entry name too long: {name}")));
    }
    let mut h = [0u8; BLOCK];
    h[..name.len()].copy_from_slice(name.as_bytes());
    octal(&mut h[100..108], 0o644);
    octal(&mut h[108..116], 0);
    octal(&mut h[116..124], 0);
    octal(&mut h[124..136], data.len() as u64);
    octal(&mut h[136..148], 0);
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    // The checksum counts its own field as spaces.
    h[148..156].fill(b' ');
    let sum: u64 = h.iter().map(|&b| b as u64).sum();
    octal(&mut h[148..155], sum);
    h[155] = b' ';
    out.extend_from_slice(&h);
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(BLOCK) * BLOCK, 0);
    Ok(())
}

/// The bytes of entry `name`; `None` where the archive ends without it.
fn entry<'a>(tar: &'a [u8], name: &str) -> Result<Option<&'a [u8]>> {
    let bad = |why: &str| Error::Checkpoint(format!("not a tar archive: {why}"));
    let mut at = 0;
    while at + BLOCK <= tar.len() {
        let h = &tar[at..at + BLOCK];
        if h.iter().all(|&b| b == 0) {
            return Ok(None);
        }
        let n = h[..100].split(|&b| b == 0).next().unwrap_or(&[]);
        let size = std::str::from_utf8(&h[124..136])
            .ok()
            .map(|s| s.trim_matches(|c: char| c == '\0' || c == ' '))
            .and_then(|s| usize::from_str_radix(s, 8).ok())
            .ok_or_else(|| bad("unreadable size"))?;
        let start = at + BLOCK;
        let data = tar
            .get(start..start + size)
            .ok_or_else(|| bad("an entry runs past the end"))?;
        if n == name.as_bytes() {
            return Ok(Some(data));
        }
        at = start + size.div_ceil(BLOCK) * BLOCK;
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::VitConfig;
    use crate::backend::Cpu;
    use crate::vit::Vit;

    fn tiny() -> Checkpoint {
        let mut c = VitConfig::vit_tiny_fmnist();
        c.embed_dim = 8;
        c.depth = 1;
        c.num_heads = 2;
        c.patch_size = 14;
        Checkpoint::from_vit(&c, &Vit::<Cpu>::init(&c, &Default::default()))
    }

    #[test]
    fn an_archive_reads_back_as_the_same_checkpoint() {
        let ck = tiny();
        let tar = to_tar(&ck).unwrap();
        assert_eq!(tar.len() % BLOCK, 0);
        let back = from_tar(&tar).unwrap();
        assert_eq!(back.config, ck.config);
        assert_eq!(
            back.safetensors_bytes().unwrap(),
            ck.safetensors_bytes().unwrap()
        );
        // Every header's checksum is the byte sum with its own field as spaces.
        let h = &tar[..BLOCK];
        let mut blank = h.to_vec();
        blank[148..156].fill(b' ');
        let sum: u64 = blank.iter().map(|&b| b as u64).sum();
        let field = std::str::from_utf8(&h[148..154]).unwrap();
        assert_eq!(u64::from_str_radix(field, 8).unwrap(), sum);
    }

    #[test]
    fn broken_archives_are_errors_not_panics() {
        let tar = to_tar(&tiny()).unwrap();
        for cut in [10, BLOCK + 3, tar.len() - 3 * BLOCK] {
            assert!(from_tar(&tar[..cut]).is_err(), "cut at {cut}");
        }
        let mut garbled = tar.clone();
        garbled[124..136].copy_from_slice(b"zzzzzzzzzzz\0");
        assert!(from_tar(&garbled).is_err());
    }
}
