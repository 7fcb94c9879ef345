from infra.offline.reference import markdown
from infra.stack_config import PROJECT_ROOT


def test_readme_configuration_reference_matches_the_model():
    readme = (PROJECT_ROOT / "README.md").read_text()
    assert readme.count(markdown()) == 1, (
        "README's configuration table is stale; regenerate it with:\n"
        "  .venv/bin/python -c 'from infra.offline.reference import markdown; print(markdown())'"
    )


def test_ci_runs_exactly_the_readme_test_command():
    readme = (PROJECT_ROOT / "README.md").read_text()
    ci = (PROJECT_ROOT / ".ci/run").read_text()
    assert "make test " in readme and ci.strip().endswith("make test")


def test_readme_documents_the_whole_metric_contract():
    from infra.metrics import CONTRACT

    readme = (PROJECT_ROOT / "README.md").read_text()
    missing = [m for m in CONTRACT if f"`{m}`" not in readme]
    assert not missing, f"README's metric contract misses {missing}"
