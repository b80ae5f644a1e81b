"""The Go text/template engine that renders configs (autopilot/gotemplate/)."""

from __future__ import annotations

import pytest

from autopilot.gotemplate import TemplateError, go_sprintf, render
from autopilot.gotemplate import exec as gotemplate_exec

pytestmark = pytest.mark.timeout(30)

ENV = {"FOO": "foo", "EMPTY": "", "LIST": "a,b,c", "EQ": "user=admin;pw=x=y", "N": "3",
       "PARTS": "a:b:c", "NAME": "Template", "SPACED": "  x y  "}


def r(src: str, env: dict[str, str] | None = None) -> str:
    return render(src, ENV if env is None else env, name="t")


@pytest.mark.parametrize("src,out", [
    ("plain text {not an action}", "plain text {not an action}"),
    ("{{ .FOO }}", "foo"),
    ("{{.FOO}}-{{ .FOO }}", "foo-foo"),
    ("[{{ .MISSING }}]", "[]"),  # missingkey=zero on map[string]string
    ("{{ .EQ }}", "user=admin;pw=x=y"),  # ContainerPilot bug #573 not reproduced
    ("{{ index . \"FOO\" }}", "foo"),
    ("{{ $.FOO }}", "foo"),
    ("{{ . | len | printf \"%d\" }}" , str(len(ENV))),
])
def test_fields_and_data(src: str, out: str) -> None:
    assert r(src) == out


@pytest.mark.parametrize("src,out", [
    ("a  {{- .FOO -}}  b", "afoob"),
    ("a\n\n{{- .FOO }}\n", "afoo\n"),
    ("{{ .FOO -}}\n\n  b", "foob"),
    ("x {{- /* a comment */ -}} y", "xy"),
    ("x{{/* comment */}}y", "xy"),
    ("{{ -3 }}", "-3"),  # a number, not a trim marker
    ("{{ 3 -}} x", "3x"),
])
def test_trim_markers_and_comments(src: str, out: str) -> None:
    assert r(src) == out


@pytest.mark.parametrize("src,out", [
    ("{{ if .FOO }}yes{{ end }}", "yes"),
    ("{{ if .EMPTY }}yes{{ else }}no{{ end }}", "no"),
    ("{{ if .EMPTY }}1{{ else if .MISSING }}2{{ else if .FOO }}3{{ else }}4{{ end }}", "3"),
    ("{{ if not .EMPTY }}ok{{ end }}", "ok"),
    ("{{ with .FOO }}<{{ . }}>{{ end }}", "<foo>"),
    ("{{ with .EMPTY }}x{{ else }}none{{ end }}", "none"),
    ("{{ with .EMPTY }}x{{ else with .FOO }}{{ . }}!{{ end }}", "foo!"),
    ("{{ range split \",\" .LIST }}{{ . }};{{ end }}", "a;b;c;"),
    ("{{ range $i, $v := split \",\" .LIST }}{{ $i }}={{ $v }} {{ end }}", "0=a 1=b 2=c "),
    ("{{ range $v := split \",\" .LIST }}{{ $v }}{{ end }}", "abc"),
    ("{{ range split \",\" .EMPTY }}x{{ else }}empty{{ end }}", "empty"),
    ("{{ range .MISSING }}x{{ else }}none{{ end }}", "none"),
    ("{{ range 3 }}{{ . }}{{ end }}", "012"),
    ("{{ range $k, $v := . }}{{ if eq $k \"N\" }}{{ $k }}={{ $v }}{{ end }}{{ end }}", "N=3"),
    ("{{ range loop 6 }}{{ if eq . 3 }}{{ break }}{{ end }}{{ . }}{{ end }}", "012"),
    ("{{ range loop 5 }}{{ if eq . 2 }}{{ continue }}{{ end }}{{ . }}{{ end }}", "0134"),
])
def test_control_structures(src: str, out: str) -> None:
    assert r(src) == out


@pytest.mark.parametrize("src,out", [
    ("{{ $x := .FOO }}{{ $x }}", "foo"),
    ("{{ $x := 1 }}{{ $x = 2 }}{{ $x }}", "2"),
    ("{{ $x := \"outer\" }}{{ if true }}{{ $x := \"inner\" }}{{ $x }}{{ end }} {{ $x }}",
     "inner outer"),
    ("{{ $x := \"a\" }}{{ if true }}{{ $x = \"b\" }}{{ end }}{{ $x }}", "b"),
    ("{{ range $i := loop 2 }}{{ $ := 0 }}{{ end }}{{ .FOO }}", "foo"),
    ("{{ (split \",\" .LIST) }}", "[a b c]"),
    ("{{ (index (split \",\" .LIST) 2) }}", "c"),
    ("{{ define \"greet\" }}hi {{ . }}{{ end }}{{ template \"greet\" .FOO }}", "hi foo"),
    ("{{ block \"b\" .N }}n={{ . }}{{ end }}", "n=3"),
])
def test_variables_parentheses_and_templates(src: str, out: str) -> None:
    assert r(src) == out


@pytest.mark.parametrize("src,out", [
    ("{{ eq .FOO \"foo\" }} {{ eq .FOO \"x\" \"foo\" }} {{ ne .FOO \"x\" }}", "true true true"),
    ("{{ lt 1 2 }} {{ le 2 2 }} {{ gt 1.5 2.5 }} {{ ge \"b\" \"a\" }}", "true true false true"),
    ("{{ and .FOO .EMPTY }}|{{ and .FOO .N }}|{{ or .EMPTY .FOO }}|{{ or .EMPTY \"\" }}|",
     "|3|foo||"),
    ("{{ and .EMPTY (index (loop 1) 9) }}ok", "ok"),  # and/or short-circuit
    ("{{ not 0 }} {{ not \"x\" }}", "true false"),
    ("{{ len .FOO }} {{ len (split \",\" .LIST) }} {{ len \"é\" }}", "3 3 2"),
    ("{{ index (split \",\" .LIST) 1 }}", "b"),
    ("{{ slice .FOO 1 }} {{ slice (split \",\" .LIST) 1 2 }}", "oo [b]"),
    ("{{ print \"a\" 1 2 \"b\" true }}", "a1 2btrue"),  # Go: no space next to a string
    ("{{ println \"a\" 1 }}", "a 1\n"),
    ("{{ printf \"%s-%d-%05.1f-%q-%v-%t-%x\" .FOO 42 3.14159 \"q\" (loop 2) true 255 }}",
     "foo-42-003.1-\"q\"-[0 1]-true-ff"),
    ("{{ html \"<a href='x'>&</a>\" }}", "&lt;a href=&#39;x&#39;&gt;&amp;&lt;/a&gt;"),
    ("{{ urlquery \"a b&c\" }} {{ js \"it's <b>\" }}", "a+b%26c it\\'s \\u003Cb\\u003E"),
    ("{{ 1e6 }} {{ 1.5 }} {{ 0x1F }} {{ 'a' }} {{ 1_000 }}", "1e+06 1.5 31 97 1000"),
])
def test_builtin_functions(src: str, out: str) -> None:
    assert r(src) == out


@pytest.mark.parametrize("src,out", [
    ("{{ .X | default \"y\" }}", "y"),
    ("{{ .EMPTY | default \"y\" }}", "y"),
    ("{{ .FOO | default \"y\" }}", "foo"),
    ("{{ .X | default 10 }}", "10"),
    ("{{ default \"d\" .FOO }}", "foo"),
    ("{{ env \"FOO\" }}|{{ env \"NOPE\" }}|", "foo||"),
    ("{{ env \"EQ\" }}", "user=admin;pw=x=y"),
    ("Hello, {{ .PARTS | split \":\" | join \".\" }}!", "Hello, a.b.c!"),
    ("{{ split \":\" .SPACED | len }}", "1"),  # input is trimmed
    ("{{ split \",\" \"\" | len }}", "0"),
    ("{{ join \",\" (split \",\" .EMPTY) }}|", "|"),
    ("Hello, {{ .NAME | replaceAll \"e\" \"_\" }}!", "Hello, T_mplat_!"),
    ("Hello, {{ .NAME | regexReplaceAll \"[epa]+\" \"_\" }}!", "Hello, T_m_l_t_!"),
    ("{{ regexReplaceAll \"(a)(n)\" \"${2}$1\" \"banana\" }}", "bnanaa"),
    ("{{ regexReplaceAll \"a(?P<x>n)\" \"<$x>\" \"banana\" }}", "b<n><n>a"),
    ("{{ regexReplaceAll \"(a)\" \"$1x\" \"ab\" }}", "b"),  # Go: $1x is group "1x"
    ("{{ regexReplaceAll \"a\" \"$$\" \"ab\" }}", "$b"),
    ("{{ range $i := loop 5 }}{{ $i }},{{ end }}", "0,1,2,3,4,"),
    ("{{ range $i := loop 5 8 }}{{ $i }},{{ end }}", "5,6,7,"),
    ("{{ range $i := loop 5 1 }}{{ $i }},{{ end }}", "5,4,3,2,"),
    ("{{ loop \"2\" .N }}", "[2]"),
    ("{{ loop 0 }}", "[]"),
])
def test_containerpilot_functions(src: str, out: str) -> None:
    assert r(src) == out


def test_env_function_reads_the_given_environment_not_os_environ() -> None:
    assert render("{{ env \"ONLY_HERE\" }}", {"ONLY_HERE": "1"}) == "1"
    assert render("{{ env \"PATH\" }}|", {}) == "|"


def test_dynamic_watches_from_numbered_variables() -> None:
    src = ('[{{ range $i := loop 0 5 -}}{{ if (env (printf "SERVICE_%d" $i)) -}}'
           '"{{ env (printf "SERVICE_%d" $i) }}:{{ (env (printf "PORT_%d" $i)) | default 80 }}",'
           '{{- end }}{{- end }}]')
    env = {"SERVICE_1": "db", "PORT_1": "5432", "SERVICE_3": "web"}
    assert render(src, env) == '["db:5432","web:80",]'


@pytest.mark.parametrize("src,line,col,message", [
    ("{{ .FOO.BAR }}", 1, 4, "can't evaluate field BAR in type string"),
    ("line one\n  {{ nope 1 }}", 2, 6, 'function "nope" not defined'),
    ("{{ if .FOO }}never closed", 1, 4, "without {{end}}"),
    ("{{ end }}", 1, 4, "unexpected {{end}}"),
    ("{{ else }}", 1, 4, "unexpected {{else}}"),
    ("{{ eq 1 \"1\" }}", 1, 4, "incompatible types for comparison"),
    ("{{ \"x\" | \"y\" }}", 1, 10, "can't give argument to non-function"),
    ("{{ loop 1 2 3 }}", 1, 4, "wrong number of args for loop"),
    ("{{ $u }}", 1, 4, "undefined variable: $u"),
    ("{{ break }}", 1, 4, "{{break}} outside {{range}}"),
    ("{{ index (loop 2) 5 }}", 1, 4, "index out of range"),
    ("x\n{{ .FOO", 2, 1, "unclosed action"),
    ("{{ }}", 1, 4, "missing value for command"),
    ("{{ nil }}", 1, 4, "nil is not a command"),
    ("{{ \"unterminated }}", 1, 4, "unterminated quoted string"),
    ("{{ regexReplaceAll \"(\" \"x\" \"y\" }}", 1, 4, "invalid regexp"),
    ("{{ loop \"x\" }}", 1, 4, "cannot convert"),
    ("{{ template \"none\" }}", 1, 4, "no such template"),
    ("{{ range .FOO }}{{ end }}", 1, 4, "range can't iterate over foo"),
    ("{{ \"\\U0011ffff\" }}", 1, 4, "invalid escape"),
])
def test_errors_carry_line_and_column(src: str, line: int, col: int, message: str) -> None:
    with pytest.raises(TemplateError) as info:
        r(src)
    assert (info.value.line, info.value.column) == (line, col), info.value
    assert message in info.value.message


def test_loop_is_bounded() -> None:
    with pytest.raises(TemplateError, match="more than"):
        r("{{ loop 100000000 }}")


@pytest.mark.parametrize("fmt,args,out", [
    ("%d|%5d|%-5d|%05d|%+d", (7, 7, 7, 7, 7), "7|    7|7    |00007|+7"),
    ("%s|%10s|%-4s|%.2s", ("ab", "ab", "ab", "abc"), "ab|        ab|ab  |ab"),
    ("%v %v %v %v", (1.0, 0.000012, 1e21, 123456.0), "1 1.2e-05 1e+21 123456"),
    ("%.3f %e %g", (3.14159, 1234.5, 0.5), "3.142 1.234500e+03 0.5"),
    ("%x %X %o %b %c %U", (255, 255, 8, 5, 65, 65), "ff FF 10 101 A U+0041"),
    ("%q %v %T %T", ("a\"b", None, "s", [1]), "\"a\\\"b\" <nil> string []int"),
    ("%d %s", ("x", 5), "%!d(string=x) %!s(int=5)"),
    ("%d %d", (1,), "1 %!d(MISSING)"),
    ("%d", (1, 2), "1%!(EXTRA int=2)"),
    ("100%%", (), "100%"),
    ("%c|%q", (0x110000, -1), "\ufffd|'\ufffd'"),
    ("%*d|%.*f", (10**9, 1, 10**9, 1.5), "%!(BADWIDTH)1|%!(BADPREC)1.500000"),
])
def test_printf_follows_go(fmt: str, args: tuple, out: str) -> None:
    assert go_sprintf(fmt, *args) == out


@pytest.mark.parametrize("src,message", [
    ("{{ range loop 500 }}{{ range loop 500 }}{{ end }}{{ end }}", "more than 50000 steps"),
    ("{{ range loop 3000 }}" + "x" * 500 + "{{ end }}", "exceeds 1 MiB"),
    ("{{ if 1 }}" * 400 + "{{ end }}" * 400, "nested too deeply"),
])
def test_runaway_templates_fail_instead_of_hanging(src: str, message: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gotemplate_exec, "MAX_STEPS", 50_000)
    monkeypatch.setattr(gotemplate_exec, "MAX_OUTPUT", 1 << 20)
    with pytest.raises(TemplateError, match=message):
        r(src)
