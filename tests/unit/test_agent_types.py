"""Agent types as data: the shipped files, an agents dir and [agents.<type>], merged and checked."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentops import cli
from agentops.agents.loader import load_agent_specs, read_agent_specs, shipped_specs
from agentops.config import load_llm, load_settings, load_tools, validate_sections
from agentops.processes import select_processes
from agentops.protocol import subjects as s
from agentops.protocol.errors import ConfigError
from agentops.tools.policy import approval_reason
from tests.harness import Harness

QA = """
name = "QA Engineer"
role = "Tests what the others built."
prompt_file = "prompts/qa.md"
task_prompt_template = "QA job: {description}\\nGiven: {context}"
capabilities = ["testing", "testing", "exploratory"]
allowed_tools = ["read_file", "list_files", "execute_code", "complete_task"]
plugin_tools = ["word_count"]
max_steps = 7
temperature = 0.9
provider = "OpenAI"
model = "gpt-4o"
approvals = [{tool = "execute_code", args = {language = "bash"}, reason = "shell"}]
"""


def agents_dir(tmp_path: Path, files: dict[str, str]) -> Path:
    directory = tmp_path / "agents"
    for name, text in files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return directory


def qa_dir(tmp_path: Path) -> Path:
    return agents_dir(tmp_path, {"qa_engineer.toml": QA, "prompts/qa.md": "  You test.\n"})


def config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agentops.toml"
    path.write_text(text)
    return path


def test_the_shipped_types_are_the_four_data_files() -> None:
    """Three specialists and tech_lead ship as type files, with prompts and standard limits."""
    specs = shipped_specs()
    assert list(specs) == [
        "backend_developer",
        "devops_engineer",
        "frontend_developer",
        "tech_lead",
    ]
    assert specs["devops_engineer"].name == "DevOps Engineer"
    assert "execute_code" in specs["backend_developer"].allowed_tools
    lead = specs["tech_lead"]
    assert lead.allowed_tools == (
        "delegate_task",
        "read_file",
        "list_files",
        "search_files",
        "request_human_input",
        "complete_task",
    )
    assert all(t in lead.system_prompt for t in ("delegate_task", "devops_engineer", "summar"))
    assert {(x.max_steps, x.temperature, x.task_prompt_template) for x in specs.values()} == {
        (20, 0.2, None)
    }


def test_a_type_file_defines_a_new_type(tmp_path: Path) -> None:
    """Every key of a type file lands in its spec; the file name is the type name."""
    spec = read_agent_specs({}, None, qa_dir(tmp_path))["qa_engineer"]
    assert (spec.name, spec.role, spec.system_prompt) == (
        "QA Engineer",
        "Tests what the others built.",
        "You test.",
    )
    assert spec.capabilities == ("testing", "exploratory")
    assert spec.allowed_tools == ("read_file", "list_files", "execute_code", "complete_task")
    assert spec.allowed_plugin_tools == ("word_count",)
    assert spec.offers_plugin("word_count") and not spec.offers_plugin("other")
    assert (spec.max_steps, spec.temperature) == (7, 0.9)
    assert (spec.route_provider, spec.route_model) == ("openai", "gpt-4o")
    assert spec.approvals[0].reason == "shell"
    assert spec.source == f"config file {tmp_path / 'agents' / 'qa_engineer.toml'}"


def test_layers_override_key_by_key(tmp_path: Path) -> None:
    """The dir overrides a shipped type's keys, [agents.<type>] overrides both; a prompt key
    replaces the other one, and prompt_file is relative to the file that declares it."""
    directory = agents_dir(
        tmp_path, {"backend_developer.toml": 'temperature = 0.5\nsystem_prompt = "Be brief."\n'}
    )
    (tmp_path / "lead.md").write_text("Lead well.")
    path = config(
        tmp_path,
        '[agents.backend_developer]\nmax_steps = 3\n[agents.tech_lead]\nprompt_file = "lead.md"\n'
        '[agents.writer]\nrole = "Writes."\nsystem_prompt = "Write."\n',
    )
    specs = load_agent_specs(load_settings(environ={}, agents_dir=directory, config_file=path))
    backend, shipped = specs["backend_developer"], shipped_specs()["backend_developer"]
    assert (backend.temperature, backend.max_steps, backend.system_prompt) == (0.5, 3, "Be brief.")
    assert (backend.role, backend.allowed_tools) == (shipped.role, shipped.allowed_tools)
    assert specs["tech_lead"].system_prompt == "Lead well."
    writer = specs["writer"]
    assert (writer.name, writer.allowed_tools[-1], writer.max_steps) == (
        "Writer",
        "complete_task",
        20,
    )


OK = 'role = "r"\nsystem_prompt = "p"\n'


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (OK + "colour = 1\n", "colour: unknown key"),
        ('role = "r"\n', "system_prompt: missing: a new agent type needs system_prompt or"),
        ('system_prompt = "p"\n', "role: missing: a new agent type needs a role"),
        ('role = "r"\nprompt_file = "nope.md"\n', "prompt_file: {dir}/nope.md does not exist"),
        ('role = "r"\nprompt_file = "empty.md"\n', "prompt_file: {dir}/empty.md is empty"),
        (OK + 'prompt_file = "x.md"\n', "prompt_file: set either system_prompt or prompt_file"),
        (OK + "max_steps = 0\n", "max_steps: Input should be greater than or equal to 1"),
        (OK + 'temperature = "hot"\n', "temperature: Input should be a valid number"),
        (
            OK + 'allowed_tools = ["read_flie", "complete_task"]\n',
            "allowed_tools: unknown tool 'read_flie'; did you mean 'read_file'?",
        ),
        (
            OK + 'allowed_tools = ["word_count", "complete_task"]\n',
            "allowed_tools: unknown tool 'word_count'; built-in tools: ",
        ),
        (OK + 'allowed_tools = ["read_file"]\n', "allowed_tools: must include complete_task"),
        (OK + 'plugin_tools = ["read_file"]\n', "plugin_tools: 'read_file' is a built-in tool"),
        (OK + 'plugin_tools = ["Word Count"]\n', "plugin_tools: 'Word Count' is not a tool name"),
        (OK + 'provider = "gpt"\n', "provider: unknown LLM provider 'gpt'"),
        (OK + 'task_prompt_template = "Do it"\n', "task_prompt_template: must contain {{context}}"),
        (
            OK + 'task_prompt_template = "{{description}} {{ctx}}"\n',
            "task_prompt_template: unknown field {{ctx}}",
        ),
        (OK + 'task_prompt_template = "{{description}} {{context:>9}}"\n', "no format spec"),
        (OK + 'task_prompt_template = "{{description}} {{context}} {{"\n', "Single '{{'"),
        (OK + 'approvals = [{{tool = "x", argz = {{}}}}]\n', "approvals.0.argz: unknown key"),
        ("role = \n", "is not valid TOML"),
    ],
)
def test_a_bad_type_file_is_one_error_naming_the_file_and_key(
    tmp_path: Path, text: str, problem: str
) -> None:
    """Each mistake in a type file is one ConfigError line: `config file <path>: <key>: ...`."""
    directory = agents_dir(tmp_path, {"qa.toml": text.format(), "empty.md": " "})
    with pytest.raises(ConfigError) as info:
        validate_sections(load_settings(environ={}, agents_dir=directory))
    message = info.value.message
    assert message.startswith(f"config file {directory / 'qa.toml'}"), message
    assert problem.format(dir=directory) in message and "\n" not in message


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[agents.qa]\ncolour = 1\n", "agents.qa.colour: unknown key"),
        ('[agents.qa]\nrole = "r"\n', "agents.qa.system_prompt: missing"),
        (
            '[agents.qa]\nrole = "r"\nprompt_file = "q.md"\n',
            "agents.qa.prompt_file: {dir}/q.md does",
        ),
        (
            '[agents.backend_developer]\nallowed_tools = ["read_flie"]\n',
            "agents.backend_developer.allowed_tools: unknown tool 'read_flie'",
        ),
        (
            '[agents."bad.name"]\nrole = "r"\n',
            "agents.bad.name: invalid agent type name 'bad.name'",
        ),
        (f'[agents.{"x" * 55}]\nrole = "r"\n', "use 1-54 of [A-Za-z0-9_-]"),
        ("[agents]\nqa = 1\n", "agents.qa: must be a table"),
    ],
)
def test_a_bad_agents_table_names_the_config_file_and_key(
    tmp_path: Path, text: str, problem: str
) -> None:
    """Each mistake in [agents.<type>] is one line: `config file <path>: agents.<type>.<key>`."""
    path = config(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        validate_sections(load_settings(environ={"AGENTOPS_CONFIG": str(path)}))
    assert info.value.message.startswith(f"config file {path}: ")
    assert problem.format(dir=tmp_path) in info.value.message


def test_a_bad_type_file_name_is_named(tmp_path: Path) -> None:
    """A file name that is no valid type name is refused, naming the file."""
    directory = agents_dir(tmp_path, {"qa.engineer.toml": 'role = "r"\nsystem_prompt = "p"\n'})
    with pytest.raises(ConfigError, match=r"qa\.engineer\.toml: invalid agent type name .*file"):
        load_agent_specs(load_settings(environ={}, agents_dir=directory))


def test_the_agents_dir_setting_must_be_a_directory(tmp_path: Path) -> None:
    """AGENTOPS_AGENTS_DIR names a directory, and children inherit it."""
    with pytest.raises(ConfigError, match=r"AGENTOPS_AGENTS_DIR: .* is not a directory"):
        load_settings(environ={"AGENTOPS_AGENTS_DIR": str(tmp_path / "none")})
    settings = load_settings(environ={"AGENTOPS_AGENTS_DIR": str(tmp_path)})
    assert settings.child_env()["AGENTOPS_AGENTS_DIR"] == str(tmp_path.resolve())
    assert load_settings(environ=settings.child_env()) == settings


def test_configured_types_are_known_to_llm_and_tools_tables(tmp_path: Path) -> None:
    """[llm.agents.<type>] and [tools.*] accept a configured type and still refuse others."""
    directory = qa_dir(tmp_path)
    ok = config(
        tmp_path,
        '[llm.agents.qa_engineer]\ntimeout_s = 5.0\n[tools]\nnetwork = ["qa_engineer"]\n'
        '[tools.approvals]\nqa_engineer = [{tool = "read_file"}]\n',
    )
    env = {"AGENTOPS_CONFIG": str(ok), "AGENTOPS_AGENTS_DIR": str(directory), "OPENAI_API_KEY": "k"}
    settings = load_settings(environ=env)
    validate_sections(settings, env)
    assert load_tools(settings).network_allowed("qa_engineer")
    bad = config(tmp_path, '[tools]\nnetwork = ["qa_enginer"]\n')
    with pytest.raises(ConfigError, match=r"tools\.network: unknown agent type 'qa_enginer'"):
        validate_sections(load_settings(environ={**env, "AGENTOPS_CONFIG": str(bad)}), env)


def test_a_types_route_applies_unless_llm_agents_sets_one(tmp_path: Path) -> None:
    """The type's provider/model route it; [llm.agents.<type>] with provider or model wins."""
    directory = qa_dir(tmp_path)
    env = {"AGENTOPS_AGENTS_DIR": str(directory), "OPENAI_API_KEY": "k"}
    route = load_llm(load_settings(environ=env), env).route("qa_engineer")
    assert (route.provider, route.model, route.timeout_s) == ("openai", "gpt-4o", 120.0)
    tuned = config(tmp_path, "[llm.agents.qa_engineer]\ntimeout_s = 5.0\n")
    env_tuned = {**env, "AGENTOPS_CONFIG": str(tuned)}
    route = load_llm(load_settings(environ=env_tuned), env_tuned).route("qa_engineer")
    assert (route.provider, route.model, route.timeout_s) == ("openai", "gpt-4o", 5.0)
    wins = config(tmp_path, '[llm.agents.qa_engineer]\nmodel = "mock-2"\n')
    env_wins = {**env, "AGENTOPS_CONFIG": str(wins)}
    route = load_llm(load_settings(environ=env_wins), env_wins).route("qa_engineer")
    assert (route.provider, route.model) == ("mock", "mock-2")
    with pytest.raises(ConfigError, match=r"qa_engineer\.toml: LLM provider 'openai' .* needs"):
        load_llm(load_settings(environ={"AGENTOPS_AGENTS_DIR": str(directory)}), {})


def test_a_types_approval_rules_come_first(tmp_path: Path) -> None:
    """A type's own approvals apply besides [tools.approvals] and are named as its table's."""
    settings = load_settings(environ={"AGENTOPS_AGENTS_DIR": str(qa_dir(tmp_path))})
    spec = load_agent_specs(settings)["qa_engineer"]
    policy = load_tools(settings).approvals.with_type_rules("qa_engineer", spec.approvals)
    reason = approval_reason(
        policy, "qa_engineer", "execute_code", {"language": "bash", "code": "x"}
    )
    assert reason is not None and "shell (rule 1 of agents.qa_engineer.approvals)" in reason
    assert approval_reason(policy, "qa_engineer", "execute_code", {"language": "python"}) is None
    assert approval_reason(policy, "qa_engineer", "api_call", {"url": "u", "method": "PUT"})


def test_a_custom_type_runs_with_its_template_and_temperature(tmp_path: Path) -> None:
    """A type from a file runs a task whose LLM requests carry its template's wording (context
    as JSON, no mock block) and its temperature; the mock plays the generic run to the end."""
    h = Harness()
    h.specs["qa_engineer"] = read_agent_specs({}, None, qa_dir(tmp_path))["qa_engineer"]
    _, agent_id = h.submit("qa_engineer", "Check login", context={"url": "/login"})
    h.run()
    request = h.llm_requests[0].request
    assert request.messages[1].content == 'QA job: Check login\nGiven: {"url": "/login"}'
    assert request.temperature == 0.9 and request.messages[0].content == "You test."
    state = h.agents[agent_id]
    assert state.status == "completed" and state.result is not None
    assert "qa_engineer" in state.result.summary
    h.submit("backend_developer", "Go", context={"mock": {"script": []}})
    h.run()
    assert h.llm_requests[-1].request.messages[1].content == "Task: Go"


def test_one_agent_process_per_configured_type(tmp_path: Path) -> None:
    """`up` starts agent-<type> for each configured type, in name order among the others."""
    types = tuple(load_agent_specs(load_settings(environ={}, agents_dir=qa_dir(tmp_path))))
    processes = list(select_processes(types))
    assert processes == [
        "edge",
        "orchestrator",
        "agent-backend_developer",
        "agent-devops_engineer",
        "agent-frontend_developer",
        "agent-qa_engineer",
        "agent-tech_lead",
        "tool-executor",
        "llm-gateway",
    ]
    assert s.agent_consumer("x" * s.AGENT_TYPE_MAX, 15) == f"agent-{'x' * 54}-l15"
    with pytest.raises(s.InvalidName):
        s.agent_process("x" * 55)


@pytest.mark.parametrize(
    ("argv", "problem"),
    [
        (["run", "agent"], "agentops run agent --type T"),
        (["run", "edge", "--type", "qa"], "--type goes with `agent` only"),
        (["run", "agent", "--type", "qa"], "unknown process 'agent-qa'"),
        (["run", "agent-qa"], "unknown process 'agent-qa'"),
    ],
)
def test_run_agent_names_a_configured_type(
    argv: list[str],
    problem: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`agentops run agent --type T` needs a configured T: otherwise one error line, exit 2."""
    monkeypatch.delenv("AGENTOPS_CONFIG", raising=False)
    monkeypatch.delenv("AGENTOPS_AGENTS_DIR", raising=False)
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and problem in err and err.count("\n") == 1
