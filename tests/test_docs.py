import pytest

from infra.offline.reference import markdown, readme_with_reference
from infra.stack_config import PROJECT_ROOT


def test_readme_configuration_reference_matches_the_model():
    readme = (PROJECT_ROOT / "README.md").read_text()
    assert readme.count(markdown()) == 1, "README's configuration table is stale; regenerate it with: make golden"


def test_the_readmes_configuration_reference_is_rewritten_in_place():
    readme = (PROJECT_ROOT / "README.md").read_text()
    stale = readme.replace(markdown().splitlines()[3] + "\n", "", 1)  # a row the model has, missing
    assert stale != readme
    assert readme_with_reference(stale) == readme
    assert readme_with_reference(readme) == readme
    with pytest.raises(RuntimeError, match="no configuration reference to rewrite"):
        readme_with_reference("# A README without the table\n")


def test_ci_runs_exactly_the_readme_test_command():
    readme = (PROJECT_ROOT / "README.md").read_text()
    ci = (PROJECT_ROOT / ".ci/run").read_text()
    assert "make test " in readme and ci.strip().endswith("make test")


def test_readme_documents_the_whole_metric_contract():
    from infra.metrics import CONTRACT

    readme = (PROJECT_ROOT / "README.md").read_text()
    missing = [m for m in CONTRACT if f"`{m}`" not in readme]
    assert not missing, f"README's metric contract misses {missing}"
