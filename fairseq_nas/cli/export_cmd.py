"""`fairseq-nas export`: a subnet of a trained supernet as a normal fairseq checkpoint."""
from __future__ import annotations

import argparse
import logging


def add_parser(sub) -> None:
    p = sub.add_parser(
        "export", help="export a subnet of a supernet checkpoint as a nas_subnet checkpoint",
        description="Write a fairseq checkpoint of arch nas_subnet holding exactly the subnet's inherited "
                    "weights and the supernet's model options. Fine-tune it with: fairseq-train DATA --user-dir "
                    "fairseq_nas --arch nas_subnet --subnet OUT --finetune-from-model OUT ... (the subnet, space "
                    "and options are read back from OUT)")
    p.add_argument("--supernet", required=True, metavar="CKPT", help="supernet checkpoint (fairseq-train output)")
    p.add_argument("--subnet", required=True, metavar="SUBNET.json", help="the subnet (JSON)")
    p.add_argument("--out", required=True, metavar="OUT.pt", help="where to write the checkpoint")
    p.add_argument("--subnet-out", metavar="JSON", help="also write the resolved subnet JSON here")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    logging.getLogger("fairseq").setLevel(logging.WARNING)
    import fairseq_nas

    fairseq_nas.register()
    from fairseq_nas.models.export import export_checkpoint
    from fairseq_nas.space import Subnet

    subnet = Subnet.load(args.subnet)
    model = export_checkpoint(args.supernet, subnet, args.out, subnet_source=args.subnet)
    n_params = sum(p.numel() for p in model.parameters())
    if args.subnet_out:
        from fairseq_nas.atomic import atomic_write_text

        atomic_write_text(args.subnet_out, subnet.to_json() + "\n")
    print(f"exported {args.subnet} from {args.supernet} -> {args.out} ({n_params:,} parameters)")
    print(f"fine-tune with: fairseq-train DATA --user-dir fairseq_nas --arch nas_subnet --subnet {args.out} "
          f"--finetune-from-model {args.out} ...")
    return 0
