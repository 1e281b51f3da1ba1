use std::io::Write;
use std::path::Path;

use super::*;
use crate::backend::Cpu;

fn idx_bytes(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0, 8, dims.len() as u8];
    for d in dims {
        b.extend(d.to_be_bytes());
    }
    b.extend_from_slice(data);
    b
}

fn write(path: &Path, bytes: &[u8], gz: bool) {
    if gz {
        let f = std::fs::File::create(path).unwrap();
        let mut e = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
        e.write_all(bytes).unwrap();
        e.finish().unwrap();
    } else {
        std::fs::write(path, bytes).unwrap();
    }
}

#[test]
fn fashion_mnist_idx_plain_and_gzip() {
    let dir = tempfile::tempdir().unwrap();
    let pixels: Vec<u8> = (0..3 * 28 * 28).map(|i| (i % 251) as u8).collect();
    write(
        &dir.path().join("t10k-images-idx3-ubyte.gz"),
        &idx_bytes(&[3, 28, 28], &pixels),
        true,
    );
    write(
        &dir.path().join("t10k-labels-idx1-ubyte"),
        &idx_bytes(&[3], &[9, 0, 4]),
        false,
    );
    let ds = load_fashion_mnist(dir.path(), Split::Test).unwrap();
    assert_eq!(ds.shape, [1, 28, 28]);
    assert_eq!(ds.labels, vec![9, 0, 4]);
    assert_eq!(ds.pixels, pixels);
    assert_eq!(ds.classes[9], "Ankle boot");
    // Batches keep file order and scale to [0,1].
    let (x, y) = ds.batch::<Cpu>(&[2, 0], &Default::default());
    assert_eq!(
        y.into_data().convert::<i64>().to_vec::<i64>().unwrap(),
        vec![4, 9]
    );
    let x = x.into_data().to_vec::<f32>().unwrap();
    assert_eq!(x[0], pixels[2 * 784] as f32 / 255.0);
    // The train split is missing: a clear error naming the file.
    let err = load_fashion_mnist(dir.path(), Split::Train)
        .unwrap_err()
        .to_string();
    assert!(err.contains("train-images-idx3-ubyte"), "{err}");
}

#[test]
fn idx_rejects_corrupt_files() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad");
    write(&p, &idx_bytes(&[2, 2, 2], &[1, 2, 3]), false); // 3 bytes for 8
    assert!(read_idx(&p).unwrap_err().to_string().contains("need 8"));
    write(&p, b"\x1f\x8bnot gzip", false);
    assert!(read_idx(&p).is_err());
    write(&p, &[1, 2, 3, 4, 5], false);
    assert!(read_idx(&p).unwrap_err().to_string().contains("magic"));
}

#[test]
fn cifar10_and_cifar100_binary() {
    let dir = tempfile::tempdir().unwrap();
    let rec = |label: &[u8], fill: u8| {
        let mut r = label.to_vec();
        r.extend((0..3072).map(|i| fill.wrapping_add((i / 1024) as u8)));
        r
    };
    let mut test = rec(&[3], 10);
    test.extend(rec(&[7], 20));
    std::fs::write(dir.path().join("test_batch.bin"), &test).unwrap();
    let names: String = (0..10).map(|i| format!("name{i}\n")).collect();
    std::fs::write(dir.path().join("batches.meta.txt"), names).unwrap();
    let ds = load_cifar10(dir.path(), Split::Test).unwrap();
    assert_eq!(ds.labels, vec![3, 7]);
    assert_eq!(ds.shape, [3, 32, 32]);
    assert_eq!(ds.classes[7], "name7");
    // Channel planes: R then G then B.
    assert_eq!(ds.pixels[0], 10);
    assert_eq!(ds.pixels[1024], 11);
    assert_eq!(ds.pixels[3072 + 2048], 22);
    assert!(load_cifar10(dir.path(), Split::Train).is_err());

    let mut c100 = rec(&[1, 42], 0);
    c100.extend(rec(&[19, 99], 5));
    std::fs::write(dir.path().join("train.bin"), &c100).unwrap();
    let ds = load_cifar100(dir.path(), Split::Train).unwrap();
    assert_eq!(ds.labels, vec![42, 99]);
    assert_eq!(ds.classes.len(), 100);
    // A truncated record is refused.
    std::fs::write(dir.path().join("test.bin"), &c100[..100]).unwrap();
    assert!(load_cifar100(dir.path(), Split::Test).is_err());
}

#[test]
fn image_folder_resizes_crops_and_labels() {
    let dir = tempfile::tempdir().unwrap();
    for (class, shade) in [("cat", 30u8), ("dog", 200u8)] {
        let d = dir.path().join("test").join(class);
        std::fs::create_dir_all(&d).unwrap();
        // A wide RGB image: the centre crop keeps the middle.
        let img = image::RgbImage::from_fn(40, 20, |x, _| {
            if (10..30).contains(&x) {
                image::Rgb([shade, shade, shade])
            } else {
                image::Rgb([0, 0, 0])
            }
        });
        img.save(d.join("a.png")).unwrap();
    }
    let spec = format!("folder:{}", dir.path().display());
    let ds = load(&spec, Split::Test, Some([1, 8, 8])).unwrap();
    assert_eq!(ds.classes, vec!["cat", "dog"]);
    assert_eq!(ds.labels, vec![0, 1]);
    assert_eq!(ds.pixels.len(), 2 * 64);
    // Centre pixel keeps the class's shade.
    assert!((ds.pixels[4 * 8 + 4] as i32 - 30).abs() <= 2);
    assert!((ds.pixels[64 + 4 * 8 + 4] as i32 - 200).abs() <= 2);
    let rgb = load(&spec, Split::Test, Some([3, 16, 16])).unwrap();
    assert_eq!(rgb.pixels.len(), 2 * 3 * 256);
    // A file that is not an image is a clear error.
    std::fs::write(dir.path().join("test/cat/b.png"), b"nope").unwrap();
    let err = load(&spec, Split::Test, Some([1, 8, 8]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("b.png"), "{err}");
}

#[test]
fn shuffles_from_a_seed_and_drops_the_remainder() {
    let ds = Dataset {
        name: "t".into(),
        shape: [1, 1, 1],
        pixels: (0..10).collect(),
        labels: (0..10).collect(),
        classes: vec!["a".into()],
    };
    let a = ds.shuffled_batches(3, &mut Rng::new(1));
    let b = ds.shuffled_batches(3, &mut Rng::new(1));
    let c = ds.shuffled_batches(3, &mut Rng::new(2));
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert_eq!(a.len(), 3);
    assert_eq!(
        ds.ordered_batches(4),
        vec![vec![0, 1, 2, 3], vec![4, 5, 6, 7], vec![8, 9]]
    );
}

#[test]
fn unknown_dataset_is_named() {
    let err = load("mnist-ish", Split::Test, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("mnist-ish"));
}

/// A 1-channel dataset of one 4×4 image holding 1..=16 (row-major).
fn counting_image() -> Dataset {
    Dataset {
        name: "counting".into(),
        shape: [1, 4, 4],
        pixels: (1..=16).collect(),
        labels: vec![3],
        classes: (0..10).map(|c| c.to_string()).collect(),
    }
}

#[test]
fn augmentation_shifts_flips_and_pads_with_zero() {
    let ds = counting_image();
    let device = Default::default();
    let pixels = |x: Tensor<Cpu, 4>| -> Vec<u8> {
        x.into_data()
            .to_vec::<f32>()
            .unwrap()
            .iter()
            .map(|v| (v * 255.0).round() as u8)
            .collect()
    };
    // No augmentation: the plain batch.
    let (plain, _) = ds.batch::<Cpu>(&[0], &device);
    let (none, y) = ds.augmented_batch::<Cpu>(&[0], &Augment::NONE, &mut Rng::new(1), &device);
    assert_eq!(pixels(none), pixels(plain));
    assert_eq!(
        y.into_data().convert::<i64>().to_vec::<i64>().unwrap(),
        vec![3]
    );
    // Over many draws: every output is the image shifted by (dy, dx) within the padding,
    // optionally mirrored, zero where the shift leaves the image; all 25 shifts and both
    // flips occur.
    let aug = Augment {
        crop_pad: 2,
        hflip: true,
    };
    let mut rng = Rng::new(7);
    let mut seen = std::collections::HashSet::new();
    for _ in 0..400 {
        let (x, _) = ds.augmented_batch::<Cpu>(&[0], &aug, &mut rng, &device);
        let got = pixels(x);
        let mut matched = None;
        'search: for flip in [false, true] {
            for dy in -2i64..=2 {
                for dx in -2i64..=2 {
                    let want: Vec<u8> = (0..16)
                        .map(|k| {
                            let (r, c) = (k / 4, k % 4);
                            let c = if flip { 3 - c } else { c };
                            let (sy, sx) = (r + dy, c + dx);
                            if (0..4).contains(&sy) && (0..4).contains(&sx) {
                                (sy * 4 + sx + 1) as u8
                            } else {
                                0
                            }
                        })
                        .collect();
                    if want == got {
                        matched = Some((flip, dy, dx));
                        break 'search;
                    }
                }
            }
        }
        seen.insert(matched.expect("every output is a shifted (flipped) copy"));
    }
    assert_eq!(seen.len(), 50, "every shift with and without the flip");
}

#[test]
fn a_peers_augmented_rows_are_the_whole_batchs() {
    let mut ds = counting_image();
    ds.pixels = ds.pixels.repeat(6);
    ds.labels = vec![0, 1, 2, 3, 4, 5];
    let (device, aug) = (Default::default(), Augment::default());
    let idx = [5, 0, 3, 1, 4, 2];
    let values = |x: Tensor<Cpu, 4>| x.into_data().to_vec::<f32>().unwrap();
    let (whole, labels) = ds.augmented_batch::<Cpu>(&idx, &aug, &mut Rng::new(3), &device);
    let (part, part_labels) = ds.augmented_rows::<Cpu>(&idx, 2..4, &aug, &mut Rng::new(3), &device);
    assert_eq!(values(part), values(whole.narrow(0, 2, 2)));
    assert_eq!(
        part_labels
            .into_data()
            .convert::<i64>()
            .to_vec::<i64>()
            .unwrap(),
        labels
            .narrow(0, 2, 2)
            .into_data()
            .convert::<i64>()
            .to_vec::<i64>()
            .unwrap()
    );
}
