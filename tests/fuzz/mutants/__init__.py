"""Structure-aware mutants of .pnn files: draw a valid model, damage one field, check the oracle.

    python -m tests.fuzz.mutants --count 100000 [--seed S] [--backend numpy|numba|both]
                                 [--jobs 2] [--start I] [--replay I] [--findings DIR]

Per mutant i of seed S (reproducible: mutant i depends on nothing but "S:i"):

1. `draw.draw_model` draws a *valid* model: a chain from an input (C 1..4, H, W 1..16)
   through conv2d / maxpool2d / relu, maybe flatten, linear / relu, maybe softmax, every shape
   chained through the ops' own `infer_shape`. Weights are dense f32 / f16 or
   `formats.CodebookTensor`s in all three modes (shared, per_channel, scaled), bits 1..16,
   densities 0..1, skewed or flat code distributions; relative-index widths automatic or
   forced; metadata plain or zlib. The file is kept as fields (`sections.FileSpec`), so a
   mutation edits a field and the container is rewritten around it with correct CRCs.
2. `mutations.mutate` applies one drawn mutation (sometimes two or three): a field edit
   (tensor header, codebook head, dims, streams, code-length tables, floats, metadata JSON tree
   or text, sections, versions), a container field with the CRCs fixed, raw damage with
   nothing repaired, or nothing (a control).
3. `oracle.check` runs `targets.read_pnn` and `targets.load_and_run` (numpy, and numba when
   asked) under the limits of `measure` and judges each outcome: an expected error, or a
   success checked against the independent decoder (`spec_decode`, from docs/FORMAT.md) and
   the independent forward pass (`reference`). Findings: crash, hang, over-memory,
   silent-change (the acceptance four), rss-over, valid-rejected, accepted-invalid,
   nondeterministic, nonfinite-divergence, harness-error.

Findings are written to tests/fuzz/findings/<class>-s<seed>-i<index>.{pnn,txt} (the .txt's
first line says what happened, the second how to replay it). The last line printed is the
summary. tests/fuzz/MUTANTS.md describes the whole and the runs.
"""
