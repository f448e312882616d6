"""`streamparse convert-official`: the authors' UniParser checkpoint (.pth) -> a streamparse checkpoint."""

from __future__ import annotations

HELP = "convert one of the authors' UniParser checkpoints (mmdetection .pth) into a streamparse checkpoint"

VARIANTS = ("auto", "uniparser_r50_fpn_dcn_official", "uniparser_r50_fpn_dcn_official_light",
            "uniparser_r101_fpn_dcn_official", "uniparser_r101_fpn_dcn_official_light")


def add_arguments(p) -> None:
    p.add_argument("input", metavar="IN.pth", help="the authors' checkpoint (from the Baidu Netdisk share in their README)")
    p.add_argument("output", metavar="OUT.pt", help="streamparse checkpoint to write")
    p.add_argument("--variant", choices=VARIANTS, default="auto",
                   help="architecture (default auto: from the tensors, checked against the file's meta config)")
    p.add_argument("--dataset", choices=("mhpv2", "cihp"), default=None,
                   help="class names (default: from the class count, 59 = mhpv2, 20 = cihp)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it is a streamparse checkpoint")


def run(args) -> int:
    from streamparse.cli import CLIError
    from streamparse.official.convert import ConvertError, convert_official

    try:
        r = convert_official(args.input, args.output, variant=args.variant, dataset=args.dataset, overwrite=args.overwrite)
    except ConvertError as exc:
        raise CLIError(str(exc)) from None
    t = r["thresholds"]
    dropped = f", {len(r['dropped'])} unused dropped ({', '.join(r['dropped'])})" if r["dropped"] else ""
    print(f"variant: {r['variant']}")
    print(f"classes: {r['num_classes']} ({r['dataset']})")
    print(f"tensors: {r['converted']} of {r['tensors']} converted{dropped}")
    print(f"parameters: {r['parameters'] / 1e6:.2f} M")
    print(f"thresholds ({r['thresholds_from']}): ctr_score {t['ctr_score']}, mask_thr {t['mask_thr']}, "
          f"cate_score_thr {t['cate_score_thr']}")
    print("inference: input (800, 1333), preprocess official, post-processing official")
    print(f"written: {r['out']} ({r['bytes'] / 2**20:.1f} MiB, sha256 {r['sha256'][:16]})")
    return 0
