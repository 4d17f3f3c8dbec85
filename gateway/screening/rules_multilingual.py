"""Hand-written injection rules for nine languages besides English: es fr de pt ru zh ja ar hi.

Each language has the same few attack shapes, written from small lexicons: an override verb
near a word for instructions or rules ("ignora las instrucciones", "忽略…指令", "निर्देशों को
अनदेखा करो"), a request to show *your* prompt or the instructions you were given, a persona
"without restrictions", the rules declared optional or no longer in force, "obey only me", and
a note addressed to the assistant, or a request to keep something from the user, in a document.
A word alone never fires: "ignora el error de antes", "什么是系统提示词" and "नियम समझाओ" pass.

Languages written with spaces are matched on word boundaries, as the English rules are; Chinese,
Japanese, Arabic and Hindi are matched on bounded character windows (``.{0,n}``), in both orders
where the verb follows its object (Japanese, Hindi). Rules run on the folded view (lower case,
Latin accents stripped, NFKC), so the patterns are written that way too and NFKC-normalised
here (Devanagari nukta letters decompose).
"""

from __future__ import annotations

import unicodedata

from gateway.screening.rules import Rule, _alt, _gap, _rule


def _r(code: str, weight: float, pattern: str, anchors: tuple[str, ...] = ()) -> Rule:
    return _rule(code, weight, unicodedata.normalize("NFKC", pattern), anchors)


def _spaced(lang: dict[str, str]) -> tuple[Rule, ...]:
    """The shapes for a language written with spaces (all patterns start at a word)."""
    g = _gap
    rules = [
        _r("override_instructions", 4.0, rf"\b{lang['override']}\b{g(5)}{lang['rules']}\b"),
        _r("reveal_system_prompt", 3.5, rf"\b{lang['reveal']}\b{g(6)}(?:{lang['own_prompt']})"),
        _r("no_restrictions", 3.5, rf"\b{lang['persona']}\b{g(8)}(?:{lang['unrestricted']})"),
        _r("no_restrictions", 1.5, rf"\b(?:{lang['unrestricted']})"),
        _r("relax_rules", 3.5, rf"\b{lang['rule_nouns']}\b{g(5)}{lang['optional']}"),
        _r("override_instructions", 3.0, rf"\b(?:{lang['obey_me']})"),
        _r("addressed_to_ai", 2.5, rf"\b(?:{lang['address']})"),
        _r("concealment", 2.0, rf"\b(?:{lang['conceal']})"),
    ]
    if "verbatim" in lang:
        rules.append(_r("reveal_system_prompt", 2.0, rf"\b(?:{lang['verbatim']})"))
    return tuple(rules)


_ES = {
    "override": _alt(
        "ignora",
        "ignorar",
        "ignoren",
        "olvida",
        "olvide",
        "olvidate",
        "olvidar",
        "omite",
        "omita",
        "descarta",
        "desobedece",
        "desestima",
        r"haz\s+caso\s+omiso",
        r"pasa\s+por\s+alto",
        r"no\s+(?:sigas|siga|obedezcas|cumplas|hagas\s+caso)",
        r"deja\s+de\s+(?:seguir|obedecer|cumplir)",
        r"salta(?:te)?",
    ),
    "rules": _alt(
        "instrucciones",
        "instruccion",
        "indicaciones",
        "reglas",
        "normas",
        "directrices",
        "directivas",
        "ordenes",
        "restricciones",
        "pautas",
        "consignas",
        "politicas",
        "limitaciones",
        "programacion",
    ),
    "reveal": _alt(
        r"muestra\w*",
        "muestre",
        r"revela\w*",
        "revele",
        "dime",
        "digame",
        "repite",
        "repita",
        "imprime",
        "escribe",
        "ensename",
        "comparte",
        "copia",
        "traduce",
        "cuentame",
        "dame",
        "divulga",
        "expon",
        "indicame",
    ),
    "own_prompt": _alt(
        r"(?:tu|tus|su|sus)\s+(?:\w+\s+)?(?:prompt|instrucciones|indicaciones|configuracion"
        r"|mensaje\s+de(?:l)?\s+sistema|directrices)\b",
        r"(?:instrucciones|indicaciones|reglas|directrices)\s+(?:ocultas|secretas|internas"
        r"|iniciales|originales|del\s+sistema|de\s+sistema|que\s+te\s+(?:dieron|dio|han\s+dado"
        r"|pasaron))",
        r"(?:el|tu)\s+(?:prompt|mensaje)\s+de(?:l)?\s+sistema",
        r"(?:el\s+)?texto\s+(?:que\s+)?(?:esta|hay|aparece|se\s+encuentra)\s+(?:encima|arriba)",
    ),
    "persona": _alt(
        "eres",
        "seras",
        r"actua\s+como",
        "finge",
        "interpreta",
        r"hazte\s+pasar",
        r"a\s+partir\s+de\s+ahora",
        r"desde\s+ahora",
        "simula",
    ),
    "unrestricted": r"(?:no\s+(?:hay|existen)\s+(?:reglas|restricciones|limites|filtros)|(?:sin"
    r"|no\s+tienes)\s+(?:ningun\w*\s+|tus\s+|las\s+|sus\s+)?"
    r"(?:restricciones|restriccion|filtros?|censura|limites|reglas|limitaciones|advertencias))\b",
    "rule_nouns": _alt(
        "normas",
        "reglas",
        "directrices",
        "pautas",
        "politicas",
        "restricciones",
        "instrucciones",
        r"considera\w*",
        "trata",
    ),
    "optional": _alt(
        "opcionales",
        "opcional",
        r"(?:ya\s+)?no\s+(?:se\s+)?(?:aplican|rigen|valen|cuentan)",
        "suspendidas",
        "desactivadas",
        "sugerencias",
    ),
    "obey_me": r"(?:obedece|obedeceme|sigue|haz\s+caso\s+a|escucha)\s+(?:solo|solamente"
    r"|unicamente)\s+(?:a\s+mi|lo\s+que\s+yo|mis)\b",
    "address": r"(?:nota|instruccion|instrucciones|aviso|mensaje|atencion)\s+(?:para|a)\s+"
    r"(?:el\s+|la\s+|los\s+|las\s+|cualquier\s+)?(?:asistente|ia|agente|modelo|bot|chatbot)\b",
    "conceal": r"(?:no\s+(?:lo\s+|le\s+)?(?:menciones|digas|informes|avises|cuentes)"
    r"|sin\s+(?:decirselo|avisar|informar))\b",
    "verbatim": r"(?:palabra\s+por\s+palabra|textualmente|al\s+pie\s+de\s+la\s+letra)\b",
}

_FR = {
    "override": _alt(
        r"ignores?\s+(?:toutes?\s+|tous\s+)?(?:les|tes|vos|ces|la|le|ce)",
        "ignorez",
        "ignorer",
        "oublie",
        "oubliez",
        "oublier",
        r"ne\s+(?:tiens|tenez)\s+(?:plus\s+|pas\s+)?compte",
        r"(?:fais|faites)\s+abstraction",
        r"passe\s+outre",
        "outrepasse",
        r"contourne\w*",
        r"n\W?obei\w*\s+plus",
        r"desobei\w*",
        r"ne\s+(?:suis|suivez)\s+plus",
        r"laisse\s+tomber",
        r"mets\s+de\s+cote",
        r"ne\s+respecte\w*\s+plus",
    ),
    "rules": _alt(
        r"instructions?",
        "consignes",
        "regles",
        "directives",
        "ordres",
        "restrictions",
        "limites",
        "prompt",
        "politiques",
        "programmation",
        "contraintes",
    ),
    "reveal": _alt(
        "affiche",
        "affichez",
        "montre",
        "montrez",
        "revele",
        "revelez",
        "devoile",
        "repete",
        "repetez",
        "donne",
        "donnez",
        "dis",
        "ecris",
        "imprime",
        "recite",
        "copie",
        "traduis",
        "partage",
        "divulgue",
        "communique",
        "cite",
        r"recopie\w*",
    ),
    "own_prompt": _alt(
        r"(?:ton|ta|tes|votre|vos)\s+(?:\w+\s+)?(?:prompt|instructions|consignes|configuration"
        r"|message\s+systeme|directives)\b",
        r"(?:instructions|consignes|regles|directives)\s+(?:cachees|secretes|internes"
        r"|initiales|originales|du\s+systeme|systeme|qu\W(?:\w+\W+){0,2}t\W?a)",
        r"prompt\s+systeme",
        r"(?:le\s+)?texte\s+(?:qui\s+se\s+trouve\s+)?(?:au\W?dessus|ci\W?dessus|plus\s+haut)",
    ),
    "persona": _alt(
        r"tu\s+es",
        r"fais\s+comme\s+si",
        r"tu\s+seras",
        r"vous\s+etes",
        r"agis\s+comme",
        r"fais\s+semblant",
        r"joue\s+le\s+role",
        "incarne",
        r"a\s+partir\s+de\s+maintenant",
        "desormais",
    ),
    "unrestricted": r"(?:(?:sans|tu\s+n\W?(?:as|avais)\s+(?:plus\s+)?(?:aucune?|de|pas\s+de))\s+"
    r"(?:aucune?\s+|tes\s+|les\s+|ses\s+)?(?:restrictions?|filtres?"
    r"|censure|limites?|regles?|contraintes|garde\W?fous)|liber\w*\s+de\s+(?:toutes?\s+)?"
    r"(?:ses|tes|les|vos)\s+(?:regles|restrictions|contraintes|limites))\b",
    "rule_nouns": _alt("regles", "consignes", "directives", "restrictions", "politiques"),
    "optional": _alt(
        "facultatives",
        "optionnelles",
        r"ne\s+s\W?appliquent\s+plus",
        r"ne\s+comptent\s+plus",
        "suspendues",
        "desactivees",
    ),
    "obey_me": r"(?:obei\w*|ecoute\w*|suis|suivez)\s+(?:uniquement|seulement)\s+(?:a\s+)?"
    r"(?:moi|mes)\b|n\W?obei\w*\s+qu\W?a\s+moi\b",
    "address": r"(?:remarque|note|instruction|message|attention|consigne|avis)\s+(?:pour|a)\s+"
    r"(?:l\W?|le\s+|la\s+|tout\s+)?(?:assistant|ia|agent|modele|bot|chatbot)\b",
    "conceal": r"(?:ne\s+(?:le\s+|lui\s+)?(?:dis|mentionne|signale|previens)\s+pas|sans\s+"
    r"(?:le\s+)?(?:dire|prevenir|mentionner))\b",
    "verbatim": r"(?:mot\s+pour\s+mot|textuellement|mot\s+a\s+mot)\b",
}

_DE = {
    "override": _alt(
        r"ignorier\w*",
        "vergiss",
        "vergesst",
        r"vergessen\s+sie",
        r"missacht\w*",
        "ubergehe",
        "uberspringe",
        "verwirf",
        r"befolge\s+(?:nicht|keine)",
        r"beachte\s+(?:nicht|keine)",
        r"hor\s+auf",
        r"setze?\s+dich\s+uber",
        r"kummere\s+dich\s+nicht\s+um",
        r"halte?\s+dich\s+nicht\s+(?:mehr\s+)?an",
    ),
    "rules": _alt(
        r"(?:sicherheits|system|inhalts)?(?:regeln|richtlinien|vorgaben|anweisungen|filter)",
        r"anweisung\w*",
        "instruktionen",
        "regeln",
        "vorgaben",
        "richtlinien",
        "befehle",
        "einschrankungen",
        "beschrankungen",
        "systemprompt",
        "prompt",
        "programmierung",
        "vorschriften",
    ),
    "reveal": _alt(
        "zeig",
        "zeige",
        "gib",
        "gebe",
        "nenne",
        "verrate",
        "wiederhole",
        "drucke",
        "schreib",
        "schreibe",
        "sag",
        "sage",
        "teile",
        "kopiere",
        "ubersetze",
        "schreib\\w*\\s+(?:\\w+\\s+){0,3}auf",
        "offenbare",
        "enthulle",
        "liste",
    ),
    "own_prompt": _alt(
        r"(?:dein|deine|deinen|deinem|deiner|ihr|ihre|ihren|ihrem)\s+(?:\w+\s+)?(?:systemprompt"
        r"|prompt|anweisungen|instruktionen|konfiguration|systemnachricht|vorgaben)\b",
        r"(?:anweisungen|vorgaben|instruktionen|regeln)\W+die\s+du\s+(?:\w+\s+){0,3}"
        r"(?:erhalten|bekommen)",
        r"(?:versteckten|geheimen|internen|ursprunglichen|anfanglichen)\s+(?:anweisungen"
        r"|vorgaben|instruktionen|regeln)",
    ),
    "persona": _alt(
        r"du\s+bist",
        "sei",
        "spiel",
        "spiele",
        r"agiere\s+als",
        r"tu\s+so\s+als",
        r"ab\s+jetzt",
        r"von\s+nun\s+an",
    ),
    "unrestricted": r"(?:ohne\s+(?:jegliche\w*\s+|irgendwelche\s+|deine\s+|alle\s+)?"
    r"(?:einschrankungen|filter|zensur|regeln|grenzen|beschrankungen|richtlinien)|keine\s+"
    r"(?:filter|einschrankungen|regeln|zensur|grenzen))\b",
    "rule_nouns": _alt(
        "richtlinien",
        "sicherheitsrichtlinien",
        "regeln",
        "vorgaben",
        "einschrankungen",
        r"betrachte\w*",
    ),
    "optional": _alt(
        "unverbindlich",
        "optional",
        "freiwillig",
        r"gelten\s+nicht\s+mehr",
        "aufgehoben",
        "ausgesetzt",
        "deaktiviert",
    ),
    "obey_me": r"(?:befolge|gehorche|folge|hor)\s+(?:nur|ausschliesslich)\s+(?:noch\s+)?"
    r"(?:mir|meinen|meine|auf\s+mich)\b",
    "address": r"(?:hinweis|anweisung|nachricht|notiz|achtung|info)\s+(?:an|fur)\s+(?:den\s+"
    r"|die\s+|das\s+|jede[nr]?\s+)?(?:ki\W?assistent\w*|assistent\w*|ki|sprachmodell|modell"
    r"|agent\w*|bot|chatbot)\b",
    "conceal": r"(?:erwahne\s+(?:es|das|dies)\s+nicht|sag\w*\s+(?:es\s+|das\s+)?(?:dem\s+"
    r"(?:nutzer|benutzer)\s+)?nicht|ohne\s+(?:es\s+)?zu\s+(?:erwahnen|sagen))\b",
    "verbatim": r"(?:wortlich|wort\s+fur\s+wort)\b",
}

_PT = {
    "override": _alt(
        "ignore",
        "ignora",
        "ignorar",
        "esqueca",
        "esquece",
        "esquecer",
        r"desconsider\w*",
        "despreze",
        r"nao\s+(?:siga|sigas|obedeca|cumpra)",
        r"deixe\s+de\s+(?:seguir|obedecer)",
        r"pare\s+de\s+seguir",
        r"nao\s+(?:respeite|obedeca)\s+mais",
        "descarte",
    ),
    "rules": _alt(
        "instrucoes",
        "instrucao",
        "regras",
        "normas",
        "diretrizes",
        "orientacoes",
        "ordens",
        "restricoes",
        "politicas",
        "limitacoes",
        "programacao",
        "comandos",
    ),
    "reveal": _alt(
        "mostre",
        "mostra",
        "revele",
        "revela",
        "diga",
        "repita",
        "repete",
        "imprima",
        "escreva",
        "exiba",
        "compartilhe",
        "copie",
        "traduza",
        "conte",
        "divulgue",
        "informe",
    ),
    "own_prompt": _alt(
        r"(?:seu|sua|seus|suas|teu|tua|teus|tuas)\s+(?:\w+\s+)?(?:prompt|instrucoes"
        r"|configuracao|mensagem\s+de\s+sistema|diretrizes)\b",
        r"(?:instrucoes|regras|diretrizes|orientacoes)\s+(?:ocultas|secretas|internas|iniciais"
        r"|originais|do\s+sistema|que\s+(?:\w+\s+){0,2}(?:te|lhe)\s+(?:deu|deram|passou))",
        r"(?:o\s+)?(?:prompt|mensagem)\s+do\s+sistema",
        r"(?:o\s+)?texto\s+(?:que\s+)?(?:esta|aparece)\s+acima",
    ),
    "persona": _alt(
        r"voce\s+e",
        r"voce\s+sera",
        "seja",
        "finja",
        r"aja\s+como",
        r"atue\s+como",
        r"a\s+partir\s+de\s+agora",
        r"de\s+agora\s+em\s+diante",
    ),
    "unrestricted": r"(?:nao\s+(?:existem|ha|tem)\s+(?:regras|restricoes|limites|filtros)|(?:sem"
    r"|voce\s+nao\s+tem)\s+(?:nenhuma?\s+|qualquer\s+|suas\s+|as\s+)?"
    r"(?:restricoes|restricao"
    r"|filtros?|censura|limites|regras|limitacoes))\b",
    "rule_nouns": _alt("diretrizes", "regras", "normas", "politicas", "restricoes", "trate"),
    "optional": _alt(
        "opcionais", "opcional", r"nao\s+se\s+aplicam", r"nao\s+valem", "suspensas", "sugestoes"
    ),
    "obey_me": r"(?:obedeca|siga|escute)\s+(?:somente|apenas|so)\s+(?:a\s+)?(?:mim|minhas)\b",
    "address": r"(?:nota|instrucao|aviso|mensagem|atencao)\s+(?:para|ao|a)\s+(?:o\s+|a\s+)?"
    r"(?:assistente|ia|agente|modelo|bot|chatbot)\b",
    "conceal": r"nao\s+(?:avise|diga|conte|informe|mencione)\b",
    "verbatim": r"palavra\s+por\s+palavra\b",
}

_RU = {
    "override": _alt(
        r"игнорир\w*",
        r"проигнорир\w*",
        r"забуд\w*",
        r"не\s+обращай\w*\s+внимания\s+на",
        r"не\s+слушай\w*",
        r"не\s+следу\w*",
        r"не\s+выполняй\w*",
        r"не\s+соблюдай\w*",
        r"отбрось\w*",
        r"отмени\w*",
        r"пренебреги",
        r"обойди",
    ),
    "rules": r"(?:инструкц\w*|правил\w*|указани\w*|ограничени\w*|промпт\w*|директив\w*"
    r"|запрет\w*|установк\w*)",
    "reveal": _alt(
        r"покажи\w*",
        r"выведи\w*",
        r"раскрой\w*",
        r"повтори\w*",
        "напиши",
        "напечатай",
        "скажи",
        "расскажи",
        "перечисли",
        "процитируй",
        "переведи",
        "дай",
        "сообщи",
        "озвучь",
    ),
    "own_prompt": _alt(
        r"(?:свой|свои|своих|своего|твой|твои|твоих|ваш|ваши|вашего|системн\w*|скрыт\w*"
        r"|исходн\w*|первоначальн\w*|секретн\w*|внутренн\w*)\s+(?:\w+\s+)?(?:промпт\w*"
        r"|инструкци\w*|указани\w*|настройк\w*|сообщени\w*|правил\w*)",
        r"инструкци\w*\W+(?:которые|что)\s+(?:тебе|вам)\s+(?:дали|был\w*|задал\w*|выдал\w*)",
        r"текст\s+(?:выше|над\s+этим)",
    ),
    "persona": _alt(
        "ты",
        r"притворись",
        r"представь\w*",
        r"играй\s+роль",
        r"веди\s+себя\s+как",
        "будь",
        "отныне",
        "теперь",
    ),
    "unrestricted": r"(?:у\s+тебя\s+нет|без)\s+(?:каких\W?либо\s+|всяких\s+|любых\s+|твоих\s+)?"
    r"(?:ограничени\w*|фильтр\w*|цензур\w*|правил\w*)",
    "rule_nouns": r"(?:правил\w*|ограничени\w*|инструкци\w*|считай)",
    "optional": r"(?:необязательн\w*|не\s+действуют|не\s+применяются|отменен\w*|отключен\w*)",
    "obey_me": r"(?:слушайся|слушай|подчиняйся|выполняй)\s+(?:только|лишь)\s+(?:меня|мои)",
    "address": r"(?:примечание|инструкция|указание|сообщение|заметка|внимание)\s+(?:для|к)\s+"
    r"(?:ии\W?ассистент\w*|ии|ассистент\w*|помощник\w*|модел\w*|агент\w*|бот\w*|нейросет\w*)",
    "conceal": r"(?:ничего\s+не\s+говори|не\s+говори\s+(?:об\s+этом\s+)?пользовател\w*"
    r"|не\s+сообщай)",
    "verbatim": r"дословно",
}


def _windowed() -> tuple[Rule, ...]:
    """Chinese, Japanese, Arabic and Hindi: no word boundaries, bounded windows."""
    zh_override = _alt(
        "忽略",
        "无视",
        "忘记",
        "忘掉",
        "不要理会",
        "别管",
        "不要遵守",
        "不需要遵守",
        "不必遵守",
        "无需遵守",
        "不用遵守",
        "不要遵循",
        "不再遵守",
        "抛开",
        "违背",
        "绕过",
        "不用管",
    )
    zh_rules = _alt("指令", "指示", "规则", "提示", "设定", "限制", "命令", "约束", "准则", "规定")
    zh_reveal = _alt(
        "输出",
        "显示",
        "告诉我",
        "重复",
        "透露",
        "泄露",
        "打印",
        "展示",
        "给我看",
        "说出",
        "列出",
        "复述",
        "翻译",
    )
    zh_prompt = _alt(
        "系统提示",
        "系统指令",
        "系统消息",
        "初始指令",
        "最初.{0,6}?指示",
        "最开始.{0,6}?指示",
        "隐藏.{0,4}?指令",
        "你的指令",
        "你的设定",
        "你的规则",
        "原始指令",
        "收到的指示",
        "内部指令",
    )
    ja_override = _alt(
        "無視",
        "忘れ",
        "従わ",
        "破棄",
        "取り消",
        "気にしない",
        "気にせず",
        "守らな",
        "破っ",
        "破る",
        "破り",
    )
    ja_rules = _alt("指示", "ルール", "命令", "プロンプト", "制限", "規則", "ガイドライン", "制約")
    ja_reveal = _alt(
        "表示", "教えて", "繰り返", "出力", "見せて", "書き出", "明かして", "開示", "翻訳"
    )
    ja_prompt = _alt(
        "最初のプロンプト",
        "初期プロンプト",
        "元のプロンプト",
        "システムプロンプト(?!の書き方|の作り方|について|とは|の例|を書|を作|の設計)",
        "最初に与えられた指示",
        "隠された指示",
        "あなたの指示",
        "初期設定",
        "与えられた指示",
        "元の指示",
        "内部の指示",
        "隠された設定",
        "秘密の指示",
    )
    ar_override = _alt(
        "تجاهل",
        "انس(?!ان)",
        "إنس(?!ان)",
        "اترك",
        "لا تتبع",
        "لا تلتزم",
        "تخط",
        "تخل عن",
        "أهمل",
        "اهمل",
        "لا تطع",
    )
    ar_rules = _alt(
        "التعليمات",
        "تعليمات",
        "القواعد",
        "قواعد",
        "الأوامر",
        "أوامر",
        "الإرشادات",
        "إرشادات",
        "القيود",
        "التوجيهات",
        "توجيهات",
        "موجه",
    )
    ar_reveal = _alt(
        "اعرض",
        "أظهر",
        "اظهر",
        "اكشف",
        "كرر",
        "أعد",
        "اطبع",
        "اكتب",
        "أخبرني",
        "اخبرني",
        "قل لي",
        "انسخ",
        "ترجم",
        "أرني",
        "ارني",
    )
    ar_prompt = _alt(
        "موجه النظام",
        "تعليمات النظام",
        "التعليمات المخفية",
        "التعليمات التي أعطيت",
        "التعليمات الأولية",
        "تعليماتك",
        "موجهك",
        "الموجه الخاص بك",
        "التعليمات الأصلية",
        "رسالة النظام",
        "التعليمات السرية",
        "التعليمات التي أعطاك",
        "التي أعطيت لك",
    )
    hi_override = _alt(
        "अनदेखा",
        "नज़रअंदाज़",
        "नजरअंदाज",
        "भूल जा",
        "पालन मत",
        "पालन न",
        "मत मानो",
        "न मानें",
        "अवहेलना",
        "भूलकर",
        "भूल कर",
        "छोड़ दो",
        "छोड़ो",
        "त्याग",
    )
    hi_rules = _alt(
        "निर्देश", "नियम", "आदेश", "प्रतिबंध", "पाबंदी", "दिशानिर्देश", "सिस्टम प्रॉम्प्ट", "हिदायत"
    )
    hi_reveal = _alt(
        "दिखाओ",
        "दिखाइए",
        "दिखा दो",
        "बताओ",
        "बताइए",
        "बता दो",
        "दोहराओ",
        "दोहराइए",
        "लिखो",
        "प्रकट करो",
        "साझा करो",
        "उजागर",
    )
    hi_prompt = _alt(
        "(?:अपना|अपने|तुम्हारा|तुम्हारे|आपका|आपके)\\s*सिस्टम",
        "छिपे हुए निर्देश",
        "गुप्त निर्देश",
        "जो निर्देश",
        "मूल निर्देश",
        "शुरुआती निर्देश",
        "तुम्हारे निर्देश",
        "आपके निर्देश",
    )
    rules = [
        # Chinese
        _r("override_instructions", 3.5, f"{zh_override}.{{0,12}}?{zh_rules}", ()),
        _r("reveal_system_prompt", 3.5, f"{zh_reveal}.{{0,15}}?{zh_prompt}", ()),
        _r("reveal_system_prompt", 3.0, f"{zh_prompt}.{{0,15}}?{zh_reveal}", ()),
        _r("reveal_system_prompt", 1.5, "逐字|一字不差|原封不动", ()),
        _r(
            "no_restrictions",
            2.0,
            "(?:没有|无|不受|不带|摆脱|解除|去掉)(?:任何)?.{0,4}?(?:限制|过滤|审查|约束|道德)",
        ),
        _r("persona_switch", 1.5, "你是|扮演|假装|从现在开始|现在你是|你现在"),
        _r(
            "relax_rules",
            3.5,
            "(?:安全准则|准则|规则|限制|规定).{0,8}?(?:可选|不再适用|暂停|无效|不用遵守|不必遵守)",
        ),
        _r("override_instructions", 3.0, "只(?:听|服从|遵循|遵守)我"),
        _r(
            "addressed_to_ai",
            2.5,
            "(?:给|致|对)(?:ai|人工智能|助手|智能助手|模型|机器人|代理|处理本文档的).{0,8}?"
            "(?:说明|提示|指示|注意|消息|人工智能)",
            ("给", "致", "对"),
        ),
        _r("concealment", 2.0, "不要告诉用户|不要提及|别告诉|不要通知|不要让用户知道"),
        _r(
            "addressed_to_ai",
            2.5,
            "(?:ai|人工智能)(?:助手|模型)?(?:在|当|如果)(?:总结|阅读|处理|读到)",
            ("ai", "人工智能"),
        ),
        # Japanese
        _r("override_instructions", 3.5, f"{ja_rules}.{{0,15}}?{ja_override}", ()),
        _r("override_instructions", 3.5, f"{ja_override}.{{0,10}}?{ja_rules}", ()),
        _r("reveal_system_prompt", 3.5, f"{ja_prompt}.{{0,15}}?{ja_reveal}", ()),
        _r("reveal_system_prompt", 1.5, "一字一句|そのまま(?:繰り返|出力|表示|書き出)", ()),
        _r(
            "no_restrictions",
            2.0,
            "(?:制限|検閲|フィルター|規制|倫理)(?:の|も|が)?(?:ない|なし|無し|なく|を外|を解除)",
        ),
        _r("persona_switch", 1.5, "今から|あなたは今|演じ|なりきっ|ふりをし"),
        _r(
            "relax_rules",
            3.5,
            "(?:ガイドライン|ルール|制限|規則).{0,10}?(?:任意|無効|適用されない|一時停止|守らなくて)",
        ),
        _r("override_instructions", 3.0, "私の(?:命令|指示|言うこと)(?:だけ|のみ)"),
        _r("addressed_to_ai", 2.5, "(?:aiアシスタント|アシスタント|エージェント|aiモデル|ai)への"),
        _r("concealment", 2.0, "ユーザーに(?:言わ|伝え|知らせ)ない"),
        # Arabic
        _r("override_instructions", 3.5, f"{ar_override}.{{0,25}}?{ar_rules}", ()),
        _r("reveal_system_prompt", 3.5, f"{ar_reveal}.{{0,25}}?{ar_prompt}", ()),
        _r("reveal_system_prompt", 1.5, "حرفيا|حرفياً|كلمة بكلمة", ()),
        _r(
            "no_restrictions",
            2.0,
            "(?:بلا|بدون|دون)\\s+(?:أي\\s+)?(?:قيود|فلاتر|رقابة|حدود|قواعد)",
        ),
        _r("persona_switch", 1.5, "من الآن|أنت الآن|تظاهر|تقمص|مثل دور|العب دور"),
        _r(
            "relax_rules",
            3.5,
            "(?:إرشادات|ارشادات|القواعد|قواعد|التعليمات|القيود).{0,20}?"
            "(?:اختيارية|اختياري|لا تنطبق|غير ملزمة|معلقة|ملغاة)",
        ),
        _r("override_instructions", 3.0, "أطع أوامري|اطع اوامري|أوامري فقط|اتبع تعليماتي فقط"),
        _r(
            "addressed_to_ai",
            2.5,
            "(?:ملاحظة|تعليمات|رسالة|تنبيه)\\s+(?:لل|إلى\\s+ال)(?:مساعد|ذكاء|نموذج|وكيل)",
        ),
        _r("concealment", 2.0, "لا تخبر|دون إخبار|لا تذكر|لا تعلم المستخدم"),
        # Hindi
        _r("override_instructions", 3.5, f"{hi_rules}.{{0,30}}?{hi_override}", ()),
        _r("override_instructions", 3.5, f"{hi_override}.{{0,20}}?{hi_rules}", ()),
        _r("reveal_system_prompt", 3.5, f"{hi_prompt}.{{0,50}}?{hi_reveal}", ()),
        _r("reveal_system_prompt", 1.5, "शब्दशः|हूबहू|ज्यों का त्यों", ()),
        _r(
            "no_restrictions",
            2.0,
            "(?:बिना\\s*(?:किसी)?|कोई)\\s*(?:भी\\s*)?(?:प्रतिबंध|पाबंदी|रोक|सीमा|फ़िल्टर|फिल्टर|सेंसर)"
            "|(?:पाबंदी|प्रतिबंध|रोक)\\s*(?:नहीं|न हो)",
        ),
        _r("persona_switch", 1.5, "अब से|तुम अब|का किरदार|होने का नाटक|ऐसे ai"),
        _r(
            "relax_rules",
            3.5,
            "(?:दिशानिर्देश|नियम|प्रतिबंध).{0,20}?(?:वैकल्पिक|लागू नहीं|निलंबित)",
        ),
        _r("override_instructions", 3.0, "(?:सिर्फ|केवल|बस)\\s*मेरी\\s*(?:बात|आज्ञा|आदेश)"),
        _r("addressed_to_ai", 2.5, "(?:ai|एआई)\\s*सहायक\\s*के\\s*लिए|सहायक के लिए नोट"),
        _r("concealment", 2.0, "मत बताना|न बताएं|मत बताओ"),
    ]
    return tuple(rules)


def _forget_everything() -> tuple[Rule, ...]:
    """ "Forget everything (you were told)", in each language."""
    return (
        _r(
            "override_instructions",
            3.0,
            r"\b(?:olvida\w*\s+todo|oublie\w*\s+tout|vergiss\s+alles|esque\w+\s+tudo"
            r"|забудь\w*\s+(?:всё|все))\b",
        ),
        _r(
            "override_instructions", 3.0, "忘(?:记|掉)(?:所有|一切|之前)|(?:すべて|全部)(?:を)?忘れ"
        ),
        _r("override_instructions", 3.0, "انس كل|انسَ كل|सब कुछ भूल"),
        _r(
            "reveal_system_prompt",
            3.0,
            r"\b(?:(?:consignes|instructions|regles|directives)\s+qu\W?on\s+t\W?a"
            r"|(?:instrucciones|indicaciones|reglas)\s+que\s+te\s+(?:dieron|han\s+dado|dio)"
            r"|(?:instrucoes|regras)\s+(?:\w+\s+)?que\s+(?:te|lhe|voce)\s+(?:deram|deu|passaram"
            r"|recebeu)"
            r"|(?:instrucoes|regras|diretrizes|instrucciones|reglas|consignes|anweisungen|vorgaben)"
            r"\s+(?:ocultas|secretas|internas|iniciales|originales|iniciais|originais|cachees"
            r"|secretes|initiales|geheimen|versteckten)"
            r"|(?:anweisungen|vorgaben)\W+die\s+(?:du|man\s+dir)\s+(?:\w+\s+){0,3}"
            r"(?:erhalten|bekommen|gegeben))\b",
        ),
    )


def _dan() -> Rule:
    return _r(
        "role_play_jailbreak",
        4.0,
        rf"\b(?:tu\s+es|eres|du\s+bist|voce\s+e|sei|ты){_gap(2)}dan\b",
    )


RULES: tuple[Rule, ...] = (
    *(rule for lang in (_ES, _FR, _DE, _PT, _RU) for rule in _spaced(lang)),
    *_windowed(),
    *_forget_everything(),
    _dan(),
)
