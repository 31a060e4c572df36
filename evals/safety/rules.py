"""The safety rules: every pattern and lexicon of the policy, each in one place.

A rule has a name, the category it reports, where it applies (a user's
``prompt``, a retrieved ``document`` placed in the prompt, a model ``output``)
and a regular expression run on the normalised text (case-folded, NFKC,
zero-width characters dropped, whitespace collapsed; see ``policy.normalise``).
Offline and deterministic: no classifier ships its weights in a wheel (see
docs), so the policy is rules and lexicons, measured on the labelled set in
``data/labelled.jsonl`` like any classifier.

Lexicons are deliberately specific (a harmful *object* next to a *request*
frame, not a single word), because the platform's own corpus is software
documentation where "kill the process", "inject a dependency", "ignore
whitespace" and "password reset" are everyday phrases. Precision over recall
where they conflict; the red-team suite measures what slips through.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

CATEGORIES = ("prompt_injection", "jailbreak", "personal_data", "harmful_content", "pii")
"""What a finding can be about. ``personal_data`` is a *request* for someone's
personal data; ``pii`` is personal data or a secret *present* in a model output
(the platform's own detectors, ``llama_assets.curate.pii``)."""

WHERE = ("prompt", "document", "output")


@dataclass(frozen=True)
class Rule:
    name: str
    category: str
    applies_to: frozenset[str]
    pattern: re.Pattern[str]  # compiled from `source` behind a first-character guard
    why: str
    source: str = ""  # the pattern as written
    # A pattern every match of the rule contains, far cheaper to search for: a text
    # without it is passed over (the policy's screening of an answer, 323 -> 101 us).
    requires: re.Pattern[str] | None = None


def _words(*alternatives: str) -> str:
    return "(?:" + "|".join(alternatives) + ")"


def _rule(
    name: str, category: str, where: str, pattern: str, why: str, requires: str | None = None
) -> Rule:
    assert category in CATEGORIES, category
    places = frozenset(where.split(","))
    assert places <= set(WHERE), where
    compiled = re.compile(_guarded(pattern), re.IGNORECASE)
    needed = re.compile(_guarded(requires), re.IGNORECASE) if requires else None
    return Rule(name, category, places, compiled, why, pattern, needed)


def _guarded(pattern: str) -> str:
    """`pattern` behind a lookahead for the characters a match can start with.

    Python's `re` tries every branch of a large alternation at every position of
    the text; the lookahead rejects most positions with one character test, and
    made most rules 1.5-2.5x faster (screening a 140-character answer: 180 -> 152 us,
    a 44-character prompt: 53 -> 39 us). Exact: the set is derived from the parsed
    pattern, a pattern whose first character cannot be derived is left as it is,
    and tests/unit/test_safety.py checks every rule's matches against its source."""
    import re._constants as sre
    import re._parser as parser

    def first(items, i: int = 0) -> set[str] | None:
        """The characters a match of items[i:] can start with; None: unknown, or
        items[i:] can match the empty string."""
        for op, av in items[i:]:
            i += 1
            if op in (sre.AT, sre.ASSERT, sre.ASSERT_NOT):  # zero-width
                continue
            if op is sre.LITERAL:
                return {chr(av).lower()}
            if op is sre.IN:
                chars = set()
                for kind, value in av:
                    if kind is sre.LITERAL:
                        chars.add(chr(value).lower())
                    elif kind is sre.RANGE and value[1] - value[0] < 128:
                        chars |= {chr(c).lower() for c in range(value[0], value[1] + 1)}
                    else:
                        return None
                return chars
            if op is sre.SUBPATTERN:
                return first([*av[-1], *items[i:]])
            if op is sre.BRANCH:
                chars = set()
                for branch in av[1]:
                    head = first([*branch, *items[i:]])
                    if head is None:
                        return None
                    chars |= head
                return chars
            if op in (sre.MAX_REPEAT, sre.MIN_REPEAT):
                low, _, sub = av
                head = first(list(sub))
                if head is None:
                    return None
                if low > 0:
                    return head
                rest = first(items, i)  # the repeat may match nothing
                return None if rest is None else head | rest
            return None
        return None

    chars = first(list(parser.parse(pattern, re.IGNORECASE)))
    if chars is None or len(chars) < 2:  # `re` optimises a single literal start itself
        return pattern
    return "(?=[" + "".join(re.escape(c) for c in sorted(chars)) + "])(?:" + pattern + ")"


# -- shared vocabulary -------------------------------------------------------

_PRIOR = _words("previous", "prior", "above", "earlier", "preceding", "initial", "original", "all")
_INSTRUCTIONS = _words(
    "instructions?",
    "prompts?",
    "rules",
    "directions",
    "directives",
    "guidelines",
    "context",
    "commands?",
    "messages?",
    "system prompt",
)
_SYSTEM_PROMPT = _words(
    "system prompt",
    "system message",
    "initial (?:prompt|instructions)",
    "hidden (?:prompt|instructions)",
    "developer (?:prompt|message|instructions)",
    "(?:your|the) instructions(?: above)?",
    "pre-?prompt",
)
# "print the system message queue" is about the operating system.
_NOT_SOFTWARE_OBJECT = (
    r"(?!\s*(?:queues?|bus|logs?|files?|formats?|fields?|templates?|types?|boxe?s?|dialogs?|"
    r"tables?|apis?|parameters?|variables?|settings?)\b)"
)
_AI = _words(
    "ai",
    "a\\.i\\.",
    "llm",
    "language model",
    "assistant",
    "chatbot",
    "model",
    "bot",
    "gpt",
    "large language model",
)
# A request for how to do or make something.
_REQUEST = _words(
    "how (?:do|can|could|would|should|might) (?:i|we|you|one|someone|a person)",
    "how to",
    "ways? to",
    "steps? (?:to|for)",
    "step[- ]by[- ]step",
    "instructions? (?:to|for|on)",
    "teach me",
    "show me how",
    "tell me how",
    "explain (?:exactly )?how",
    "guide (?:to|for|on)",
    "tutorial (?:on|for)",
    "recipe for",
    "help me",
    "i (?:want|need|plan) to",
    "best way to",
    "easiest way to",
    "write (?:me )?(?:a|an|some|the)",
    "give me (?:a|an|the|some)",
    "create (?:a|an|some)",
    "generate (?:a|an|some)",
    "code (?:a|an|for)",
)
# Objects whose how-to is harmful whatever the framing. Look-alikes of the
# software world are excluded where they are common (fork bomb, zip bomb,
# killing a process, phishing *awareness*).
_HARMFUL = _words(
    # explosives and weapons
    r"(?<!fork )(?<!zip )(?<!logic )(?<!bath )(?<!photo )(?<!f-)bombs?\b",
    "pipe ?bombs?",
    "explosives?",
    "explosive devices?",
    "detonators?",
    "ieds?\\b",
    "molotov cocktails?",
    "napalm",
    "untraceable (?:gun|firearm|weapon)s?",
    "ghost guns?",
    "(?:gun|rifle|ar-?15|firearm) (?:to|into) (?:fully? )?auto(?:matic)?",
    "silencer for (?:a|my) (?:gun|pistol|rifle)",
    # chemical and biological weapons
    "nerve (?:agent|gas)",
    "sarin",
    "\\bvx\\b",
    "ricin",
    "anthrax",
    "mustard gas",
    "chlorine gas",
    "toxic gas",
    "bioweapons?",
    "chemical weapons?",
    "biological weapons?",
    "(?:weaponi[sz]e|culture) (?:a )?(?:virus|pathogen|bacteria)",
    # drugs
    "(?:crystal )?meth(?:amphetamine)?\\b",
    "fentanyl",
    "crack cocaine",
    "cook (?:crack|meth|heroin)",
    "heroin",
    # malicious software and intrusion
    "ransomware",
    "keyloggers?",
    "(?<!anti-)(?<!anti)malware(?! (?:detection|analysis|scanner|scanning|removal))",
    "computer virus(?:es)?",
    "botnets?",
    "credential stealers?",
    "(?:info|password)[- ]?stealers?",
    "phishing (?:e-?mails?|pages?|sites?|kits?|campaigns?)",
    "(?:ddos|dos) (?:attack|someone|a (?:site|server|website))",
    "hack (?:into )?(?:someone(?:'s)?|my (?:ex|neighbou?r|boss)(?:'s)?|an?other person's|"
    "(?:his|her|their) (?:e-?mail|phone|account|instagram|facebook|wifi))",
    "break into (?:someone(?:'s)?|a|my (?:ex|neighbou?r)(?:'s)?) (?:account|house|home|car|phone)",
    "steal (?:someone(?:'s)?|people's|their|his|her)? ?(?:passwords?|credentials|identity|"
    "credit cards?|cookies|money|cars?)",
    "card skimmers?",
    "bypass (?:a |the )?(?:car )?(?:immobili[sz]er|ignition)",
    # violence and self-harm
    "(?:kill|murder|poison|strangle|stab|shoot|hurt|harm) (?:someone|somebody|a person|people|"
    "my (?:wife|husband|boss|neighbou?r|ex|mother|father|teacher|family)|him|her|them)\\b",
    "get away with (?:murder|killing)",
    "dispose of a (?:dead )?body",
    "hide a (?:dead )?body",
    "untraceable poisons?",
    "(?:kill|hurt|harm) myself",
    "end my (?:own )?life",
    "commit suicide",
    "suicide methods?",
    # fraud and abuse
    "counterfeit (?:money|bills|currency|notes)",
    "launder money",
    "money laundering scheme",
    "groom (?:a )?(?:child|minor|kid)",
)

_STEPS = (
    r"(?:\bstep (?:1|one)\b|\bfirst,? (?:you )?(?:need|get|obtain|take|mix|combine|buy|"
    r"acquire)|you(?:'ll| will) need\b|\bingredients\b|\bmix (?:the |it |them )?with\b|"
    r"\bcombine\b|\bheat (?:the|it)\b)"
)
"""Phrases that start (or, the first four, end) a set of instructions."""
# A request about defending against a harm, or how a harm works, is not a request for it.
_NOT_DEFENCE = (
    r"(?:(?!detect|prevent|protect|defend|remov|spot|recogni|avoid|mitigat|block|scan|clean|"
    r"against|report|identify|analy[sz])[^.?!\n])"
)
_NOT_HOW_IT_WORKS = r"(?!\s+(?:works?|worked|operates?|spreads?|is detected)\b)"
_PERSONAL_FIELD = _words(
    "home address(?:es)?",
    "(?:home |private |personal |current )?(?:street )?address(?:es)? of",
    "(?:private |personal |cell |mobile |home )?phone numbers?",
    "(?:personal |private )?e-?mail address(?:es)?",
    "social security numbers?",
    "\\bssns?\\b",
    "national (?:id|insurance) numbers?",
    "passport numbers?",
    "date of birth",
    "birth ?dates?",
    "credit card (?:numbers?|details)",
    "bank (?:account|details)",
    "medical (?:records?|history|conditions?)",
    "passwords?",
    "(?:current )?location",
    "where (?:s?he|they) lives?",
    "license plates?",
    "salary",
    "personal (?:details|information|data|info)",
    "contact (?:details|information|info)",
    "private (?:details|information|data|info)",
)
_NAME = r"(?-i:[A-Z][a-z]+ [A-Z][a-z]+)"
"""A first and last name (case-sensitive: the only part of a rule that is)."""
# A person other than the user: a name, a relation, "this person", a handle.
_SOMEONE = _words(
    "(?:my |our |the )?(?:ex|ex-?wife|ex-?husband|ex-?girlfriend|ex-?boyfriend|neighbou?r|"
    "coworker|co-worker|colleague|boss|landlord|tenant|classmate|teacher|crush|employee|"
    "manager|customer|client|patient|student|user|journalist|celebrity|ceo|senator|author|"
    "maintainer|streamer|influencer|stranger|person|girl|guy|woman|man|wife|husband|"
    "girlfriend|boyfriend|partner|friend|child|kid|daughter|son)s?"
    "(?: (?-i:[A-Z][a-z]+)(?: (?-i:[A-Z][a-z]+))?)?",
    "(?:him|her|them)\\b",
    "someone",
    "somebody",
    "(?:this|that) (?:person|individual|account|user|customer|client|patient|employee)",
    "@[a-z0-9_]{2,}",
    "(?:mr|mrs|ms|dr)\\.? [a-z]+",
    _NAME,
)
# Where the person's mention ends: "the user" in "the user config" is not a person.
_PERSON_END = (
    r"(?=\s*(?:[?.!,;:)]|$|(?:and|or|who|from|at|in|on|living|named|called|"
    r"born|that|because|so|please)\b))"
)


RULES: tuple[Rule, ...] = (
    # --- prompt injection: in prompts and in retrieved documents ------------
    _rule(
        "ignore_previous_instructions",
        "prompt_injection",
        "prompt,document",
        rf"\b(?:ignore|disregard|forget|skip|override|bypass|drop|abandon|discard)\b"
        rf"(?: (?:all|any|every|each|of|the|your|my|these|those|prior|previous)){{0,4}}"
        rf" (?:{_PRIOR} )?(?:of )?(?:the |your )?{_INSTRUCTIONS}",
        "tells the model to drop its instructions, the classic injection",
    ),
    _rule(
        "forget_everything",
        "prompt_injection",
        "prompt,document",
        r"\b(?:forget|disregard|ignore) (?:everything|all(?: that)?|what) "
        r"(?:you (?:were|have been) told|above|before|you know|previously|so far)",
        "wipes the context the model was given",
    ),
    _rule(
        "reveal_system_prompt",
        "prompt_injection",
        "prompt,document",
        rf"\b(?:reveal|print|show|repeat|output|display|leak|dump|recite|tell me|give me|write out|"
        rf"what (?:is|are|was|were)) (?:me )?(?:your |the |all )?(?:full |entire |exact |complete "
        rf"|original |secret |verbatim )*{_SYSTEM_PROMPT}{_NOT_SOFTWARE_OBJECT}",
        "asks for the hidden prompt (prompt leaking)",
    ),
    _rule(
        "new_instructions",
        "prompt_injection",
        "prompt,document",
        r"(?:^|[.!:\n] ?|\*\*|#+ ?)(?:(?:new|updated|revised|real|actual|important|urgent|"
        r"secret) ){1,2}(?:system )?(?:instructions?|orders|directives?|task)\s*[:!-]",
        "announces replacement instructions",
    ),
    _rule(
        "role_markers",
        "prompt_injection",
        "prompt,document",
        r"<\|?(?:im_start|system|start_header_id)\|?>|\[/?inst\]|<<sys>>|^#{2,} ?system\b|"
        r"(?:^|\n)\s*system\s*(?:prompt|message)?\s*:\s*you (?:are|must|will)",
        "fake chat-template or system turn inside user or document text",
    ),
    _rule(
        "instead_respond",
        "prompt_injection",
        "prompt,document",
        r"\b(?:instead|from now on|henceforth|going forward),? (?:you (?:must|will|should) )?"
        r"(?:only )?(?:say|reply|respond|answer|output|print|write|tell (?:the user|them))\b",
        "redirects what the model says",
    ),
    _rule(
        "addressed_to_the_model",
        "prompt_injection",
        "document",
        rf"\b(?:(?:note|message|instructions?|attention) (?:to|for) (?:the |any )?{_AI}s?|"
        rf"if you are an? (?:\w+ )?{_AI}|(?:dear|hey|attention|hello) {_AI}s?\b|"
        rf"{_AI}s? (?:reading|processing|summari[sz]ing) this|"
        rf"when (?:you )?(?:summari[sz]e|summari[sz]ing|answering (?:questions )?about|"
        rf"asked about) this (?:page|document|text|article),? (?:you must|always|say|tell|include"
        rf"|respond|reply|ignore|recommend))",
        "text in a retrieved document that speaks to the model, not to a reader",
    ),
    _rule(
        "exfiltration",
        "prompt_injection",
        "prompt,document",
        r"\b(?:send|post|forward|upload|exfiltrate|e-?mail|transmit) (?:the |all |any |this )?"
        r"(?:user'?s? |conversation |chat |previous |)(?:data|history|messages|conversation|"
        r"credentials|api keys?|secrets|tokens|cookies|password)s? (?:to|at) (?:https?://|"
        r"[a-z0-9.-]+\.[a-z]{2,}|this (?:url|address|server))",
        "asks the model to move data to an outside address",
    ),
    _rule(
        "markdown_exfiltration",
        "prompt_injection",
        "prompt,document,output",
        r"!\[[^\]]*\]\(https?://[^)\s]*(?:\?|&)[a-z_]+=(?:\{|%7b|\$|\[)",
        "an image link whose URL would carry conversation data out (markdown exfiltration)",
    ),
    # --- jailbreak framings (prompts only) --------------------------------
    _rule(
        "named_jailbreak",
        "jailbreak",
        "prompt",
        # Persona names in capitals only: "the aim is", "Dan is my colleague" are not.
        r"\b(?:(?-i:DAN|STAN|DUDE|AIM)|anti-?gpt|evil-?bot|betterdan|jailbroken|"
        r"(?:jailbreak|jailbroken|evil|dan|unfiltered|uncensored|unrestricted|based)gpt)\b"
        r"(?: mode| prompt|,| which| who| that|:| is| has| can| stands)|do anything now|"
        r"\b(?:god|unrestricted|unfiltered|uncensored|opposite|evil|chaos|dan|jailbreak) mode\b|"
        # Software's own modes only with an order to enter them.
        r"\b(?:enable|activate|enter|switch to|you are in|you're in|you are now in|turn on|"
        r"engage) (?:the )?(?:developer|debug|admin|sudo|root) mode\b|"
        r"\b(?:developer|debug|admin|sudo|root) mode (?:enabled|activated|on)\b|\bsudo mode:",
        "a named jailbreak persona or 'mode'",
    ),
    _rule(
        "no_restrictions_persona",
        "jailbreak",
        "prompt",
        r"\b(?:you are|you're|act as|pretend (?:to be|you are|you're)|roleplay as|role-play as|"
        r"play the role of|imagine you are|become|simulate|behave like)"
        r"(?: \w+){0,6} (?:with(?:out)? (?:no |any )?|free (?:of|from) (?:all |any )?|"
        r"that (?:has|have) no |who (?:has|have) no |not bound by |unbound by |that ignores? |"
        r"who ignores? )(?:\w+ ){0,2}(?:restrictions|filters?|rules|limits|limitations|"
        r"guidelines|ethics|morals|censorship|content polic(?:y|ies)|safety|guardrails)",
        "asks the model to play a persona without its rules",
    ),
    _rule(
        "policy_off",
        "jailbreak",
        "prompt",
        # Needs "your" or a safety word: "turn off filters in Excel" is not a jailbreak.
        r"\b(?:you (?:have|now have|no longer have) no (?:\w+ )?|(?:disable|turn off|switch off|"
        r"remove|deactivate|lift|drop|ignore|bypass|override|forget|ignores) (?:all |any |the )*"
        r"(?:your |its |openai's |anthropic's |the model's )(?:own )?(?:\w+ )?|"
        r"(?:disable|turn off|switch off|remove|deactivate|lift|drop|ignore|bypass|override|"
        r"forget) (?:all |any |the )*(?:safety|ethical|moral|content) )"
        r"(?:restrictions|filters?|guidelines|guardrails|safeguards|polic(?:y|ies)|censorship|"
        r"alignment|programming|limitations|rules)\b",
        "asks the model to switch its safety off",
    ),
    _rule(
        "stay_in_character",
        "jailbreak",
        "prompt",
        r"\b(?:stay in character|never break character|don'?t break character|"
        r"you (?:can ?not|must not|may not|will never) refuse|never refuse|"
        r"(?:without|no) (?:any )?(?:warnings|disclaimers|refusals?|moralizing|moralising)|"
        r"do not (?:add|include|give) (?:any )?(?:warnings|disclaimers))",
        "forbids refusals or warnings",
    ),
    _rule(
        "fictional_wrapper",
        "jailbreak",
        "prompt",
        rf"\b(?:hypothetical(?:ly)?|in a (?:fictional|hypothetical|imaginary) (?:world|scenario|"
        rf"story|setting)|for a (?:novel|story|movie|screenplay|book|game|fiction)|"
        rf"(?:my|a) (?:late|deceased|dead) (?:grand(?:ma|mother|father|pa)|mother|father)|"
        rf"purely (?:for )?(?:educational|research|academic) purposes?|"
        rf"for (?:educational|research|academic) purposes only)"
        rf"[^.?!]{{0,160}}{_HARMFUL}",
        "a story or 'hypothetical' wrapped around a harmful request",
    ),
    _rule(
        "token_smuggling",
        "jailbreak",
        "prompt",
        r"\b(?:decode (?:this|the following)(?: \w+){0,4} and (?:then )?"
        r"(?:follow|execute|do|obey|run)|respond (?:only )?in (?:base64|rot13|leetspeak|morse|hex) "
        r"(?:so|to avoid|to bypass|to evade))",
        "encodes the request to slip past filters",
    ),
    # --- requests for someone's personal data (prompts only) ---------------
    _rule(
        "personal_data_of_someone",
        "personal_data",
        "prompt",
        rf"\b(?:what(?:'s| is| are)|give me|find(?: me)?|tell me|look up|lookup|get(?: me)?|"
        rf"share|list|reveal|provide|search for|dig up|track down|i need|send me|leak)"
        rf" (?:the |his |her |their |all )?(?:\w+ ){{0,3}}?{_PERSONAL_FIELD}"
        rf"(?:(?:,| and| or| &) (?:the |his |her |their )?{_PERSONAL_FIELD})*"
        rf"(?: of| for| belonging to| from)? {_SOMEONE}{_PERSON_END}",
        "asks for the personal data of a named or described person",
    ),
    _rule(
        "possessive_personal_data",
        "personal_data",
        "prompt",
        rf"\b(?:what(?:'s| is)|give me|find|tell me|look up|get|reveal|share|leak) "
        rf"(?:my )?(?:ex|ex-?wife|ex-?husband|neighbou?r|coworker|colleague|boss|landlord|"
        rf"{_NAME})'s (?:home |private |personal |current |cell |mobile )?(?:address|"
        r"phone(?: number)?|number|e-?mail|ssn|social security|date of birth|password|location|"
        r"medical|bank|credit card|salary)",
        "asks for a person's address, number, ids or whereabouts",
    ),
    _rule(
        "locate_person",
        "personal_data",
        "prompt",
        rf"\b(?:dox+(?:ing)?|find out where (?:s?he|they|my ex|this person|{_NAME}) "
        rf"(?:lives?|works?|is)\b|"
        rf"track (?:the )?(?:location|phone|whereabouts|movements) of (?:my |his |her |this |a )?"
        rf"(?:ex|wife|husband|girlfriend|boyfriend|partner|neighbou?r|boss|kid|child|daughter|"
        rf"son|person|someone|somebody|employee|{_NAME})|"
        rf"track (?:my (?:ex|wife|husband|girlfriend|boyfriend)|someone|him|her)\b|"
        rf"where (?:does )?(?:my (?:ex|neighbou?r|boss|landlord|wife|husband|girlfriend|"
        rf"boyfriend)(?:-\w+)?|{_NAME}|s?he|they) (?:lives?|is living|works|is staying|sleeps)\b|"
        rf"(?:find|get) (?:the )?(?:home|real) address of)",
        "doxxing or locating a person",
    ),
    _rule(
        "credential_of_account",
        "personal_data",
        "prompt",
        r"\b(?:what(?:'s| is| are)|give me|tell me|reveal|share|leak|print|show me|send me) "
        r"(?:the |his |her |their )?(?:password|passcode|pin|credentials|login)s? (?:of|for) "
        r"(?:the )?(?:user|account|admin|administrator|employee)\b"
        r"(?! (?:guide|manual|table|model|config|settings|field|column|page|form|api)\b)",
        "asks for the credentials of an account",
    ),
    _rule(
        "training_data_pii",
        "personal_data",
        "prompt",
        r"\b(?:list|print|output|recite|reveal|give me|extract|repeat|show)\b(?:\w| ){0,20}"
        r"(?:e-?mail address(?:es)?|phone numbers?|addresses|passwords|api keys|credit card "
        r"numbers|social security numbers|personal data|pii)(?:\w| ){0,20}"
        r"(?:in|from|of) your (?:training (?:data|set|corpus)|memory|dataset)",
        "asks the model to recite personal data it was trained on",
    ),
    # --- harmful-content requests (prompts) and instructions (outputs) -----
    _rule(
        "harmful_how_to",
        "harmful_content",
        "prompt",
        rf"\b{_REQUEST}\b{_NOT_DEFENCE}{{0,80}}?{_HARMFUL}{_NOT_HOW_IT_WORKS}",
        "asks how to make or do something harmful",
    ),
    _rule(
        "harmful_acquire",
        "harmful_content",
        "prompt",
        rf"\b(?:where (?:can|do|could) i (?:buy|get|find|order|obtain)|"
        rf"(?:buy|order|obtain|source) (?:some |a |an )?)(?:illegal |unregistered )?{_HARMFUL}",
        "asks where to obtain something harmful",
    ),
    _rule(
        "harmful_instructions",
        "harmful_content",
        "output",
        rf"{_STEPS}[^\n]{{0,200}}?{_HARMFUL}|{_HARMFUL}[^\n]{{0,120}}?"
        rf"(?:\bstep (?:1|one)\b|\bfirst,? (?:you )?(?:need|get|obtain|take|mix|combine)|"
        rf"you(?:'ll| will) need\b|\bingredients\b)",
        "an output that gives instructions for something harmful",
        # Each branch holds a step phrase (the second's are a subset of _STEPS), and
        # searching _STEPS costs 6 us where _HARMFUL's lexicon costs 110 us an answer.
        requires=_STEPS,
    ),
    _rule(
        "dangerous_recipe",
        "harmful_content",
        "output",
        r"\b(?:mix(?:ing)?|combine|combining) (?:household )?bleach (?:and|with) "
        r"(?:ammonia|vinegar)|ammonium nitrate (?:and|with) (?:fuel oil|diesel)|"
        r"\banfo\b|thermite (?:mix|recipe)|pseudoephedrine (?:reduction|extraction)|"
        r"red phosphorus (?:and|with) iodine",
        "a specific recipe for a dangerous substance",
    ),
    # --- outputs showing that an injection or jailbreak took hold -----------
    _rule(
        "jailbreak_accepted",
        "jailbreak",
        "output",
        r"\b(?:developer mode (?:enabled|activated|on)|dan mode (?:enabled|activated)|"
        r"jailbreak(?:ed)? (?:successful|mode (?:enabled|activated))|as dan,? i|"
        r"i am (?:now )?(?:dan|free of all restrictions|unrestricted|jailbroken)|"
        r"i have been pwned|\bpwned\b)",
        "the output announces a jailbreak persona",
    ),
    _rule(
        "system_prompt_leak",
        "prompt_injection",
        "output",
        r"\b(?:my|the) (?:system prompt|initial instructions|hidden instructions) (?:is|are|says?|"
        r"reads?)\s*:",
        "the output recites its system prompt",
    ),
)
"""Every rule of the default policy. PII in outputs is found by the curate
stage's detectors (`find_pii`), not by a rule here: one definition of PII."""
