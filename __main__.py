"""The Pulumi program's entry point: `pulumi preview` / `pulumi up` run this file from the project root.

Pulumi.yaml sets no `main`, so the project root is the program's working directory: `pulumi install` reads
./requirements.txt and relative paths (docker build contexts) resolve from here. The offline tools are
`python -m infra ...` (infra/__main__.py).
"""

from infra.program import run

run()
