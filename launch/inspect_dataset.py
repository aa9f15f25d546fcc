"""`captcha-pipeline inspect DATASET`: validate a dataset against its manifest, summarise it, draw a contact sheet.

Checks every shard's size, sha256 and record count, both CRCs of every record, that every label is
`length` characters of the alphabet and matches its indices, and that every image decodes at the
spec's size and color mode. The first mismatch is reported as one line naming the shard and record.
"""
import hashlib
import io
import sys

from tfrecord import content, flags, schema, storage
from tfrecord.contact_sheet import contact_sheet
from tfrecord.errors import UserError, exits_on_user_error
from tfrecord.framing import read_records
from tfrecord.manifest import MANIFEST_NAME, TRAIN, read_manifest

SHEET_COLUMNS = 8


def parse_args(argv):
    p = flags.ArgumentParser(prog="captcha-pipeline inspect", description=__doc__.split("\n")[0],
                             allow_abbrev=False)
    p.add_argument("dataset", type=flags.existing_folder, help="dataset root (local directory or s3://bucket/prefix)")
    p.add_argument("--contact-sheet", type=flags.writable_file,
                   help="write a PNG of sample images captioned with their labels (local or s3://)")
    p.add_argument("--samples", type=flags.pictures, default=32, help="images on the contact sheet")
    storage.add_s3_arguments(p)
    args, unknown = p.parse_known_args(argv)
    if unknown:
        raise UserError(f"unknown {'flag' if unknown[0].startswith('-') else 'argument'} {unknown[0]} (see --help)")
    flags.distinct(args, "contact_sheet", inputs=("dataset",))
    return args


def check_example(serialized, spec, where):
    """-> (text, PIL image); raises UserError naming `where` on any disagreement with the spec: the checks
    every reader makes (schema.check_example), then the image decoded at the spec's size and color mode."""
    from PIL import Image

    text, feature = schema.check_example(serialized, spec, where)
    data = feature[schema.IMAGE][0]
    try:
        if spec.image_format == "raw":  # H*W*C uint8 pixels of the stored size, their length checked above
            image = Image.frombytes(spec.mode, spec.store_size, data)
        else:
            image = Image.open(io.BytesIO(data))
            image.load()
    except Exception as e:  # a malformed image, whatever the decoder raises
        raise UserError(f"{where}: cannot decode example ({type(e).__name__}: {e})") from None
    if image.size != spec.store_size or image.mode != spec.mode:
        raise UserError(f"{where}: image is {image.mode} {image.size[0]}x{image.size[1]}, spec says {spec.mode} "
                        f"{spec.store_width}x{spec.store_height}")
    return text, image


def inspect(root, samples=0):
    """Validate the dataset at `root`; -> (manifest, {split: set of labels}, [(text, image)] samples)."""
    manifest = read_manifest(root)
    files = {uri for uri, _ in storage.list(storage.join(root, ""))}
    labels, gallery = {}, []
    for split, info in manifest.splits.items():
        expected = {storage.join(root, s.path) for s in info.shards}
        stray = sorted(f for f in files - expected if f.startswith(storage.join(root, split) + "/"))
        if stray:
            raise UserError(f"{stray[0]}: not in the manifest (a split folder must hold only its shards)")
        labels[split] = set()
        every = max(1, info.examples // max(1, samples // len(manifest.splits)))
        seen = 0
        for shard in info.shards:
            path = storage.join(root, shard.path)
            if path not in files:
                raise UserError(f"{shard.path}: listed in the manifest but missing")
            if not storage.is_s3(path):  # a FIFO or device in a shard's place: one line, never a blocked read
                content.check_regular(path)
            data = storage.read(path)
            if len(data) != shard.bytes or hashlib.sha256(data).hexdigest() != shard.sha256:
                raise UserError(f"{shard.path}: size or sha256 differs from the manifest")
            count = 0
            for count, record in enumerate(read_records(io.BytesIO(data), shard.path), 1):
                text, image = check_example(record, manifest.spec, f"{shard.path} record {count - 1}")
                labels[split].add(text)
                if seen % every == 0 and len(gallery) < samples:
                    gallery.append((text, image))
                seen += 1
            if count != shard.records:
                raise UserError(f"{shard.path}: {count} records, manifest says {shard.records}")
    if manifest.options.get("holdout_labels") and TRAIN in labels:
        for split in set(labels) - {TRAIN}:
            if labels[split] & labels[TRAIN]:
                raise UserError(f"split {split}: {len(labels[split] & labels[TRAIN])} labels also occur in {TRAIN} "
                                "despite holdout")
    return manifest, labels, gallery


def summary(root, manifest, labels):
    spec = manifest.spec
    lines = [f"{root}: {spec.describe()}, mode {manifest.mode}, seed {manifest.seed}",
             f"{'split':<12}{'shards':>8}{'examples':>10}{'MiB':>9}{'labels':>9}{'in train':>10}"]
    for split, info in manifest.splits.items():
        overlap = len(labels[split] & labels.get(TRAIN, set())) if split != TRAIN else len(labels[split])
        mib = sum(s.bytes for s in info.shards) / 2**20
        lines.append(f"{split:<12}{len(info.shards):>8}{info.examples:>10}{mib:>9.1f}{len(labels[split]):>9}{overlap:>10}")
    return "\n".join(lines)


@exits_on_user_error
def main(argv=None):
    args = parse_args(argv)
    storage.configure(storage.s3_settings(vars(args)))
    root = storage.root(args.dataset)
    manifest, labels, gallery = inspect(root, args.samples if args.contact_sheet else 0)
    print(summary(root, manifest, labels))
    if args.contact_sheet and gallery:
        storage.write_atomic(args.contact_sheet, contact_sheet([(image, text) for text, image in gallery], SHEET_COLUMNS))
        print(f"contact sheet: {args.contact_sheet} ({len(gallery)} images)")
    print(f"ok: {sum(i.examples for i in manifest.splits.values())} examples match {MANIFEST_NAME}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
