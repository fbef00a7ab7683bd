"""A block list of the most common passwords (lower-cased, whitespace-free).

Compiled from the public top-password lists (NCSC "100k most used" top entries,
SplashData/NordPass yearly lists, the RockYou top ranks) plus the long phrases
people reach for when told "at least 12 characters".  It is deliberately small:
:func:`roost.security.passwords.check_password_policy` also strips digits/symbols
from the ends and undoes common letter substitutions before looking a password up,
so "P@ssw0rd2024!" is caught through "password".
"""

from __future__ import annotations

_RAW = """
123456 password 12345678 qwerty 123456789 12345 1234 111111 1234567 dragon 123123
baseball abc123 football monkey letmein 696969 shadow master 666666 qwertyuiop
123321 mustang 1234567890 michael 654321 pussy superman 1qaz2wsx 7777777 fuckyou
121212 000000 qazwsx 123qwe killer trustno1 jordan jennifer zxcvbnm asdfgh hunter
buster soccer harley batman andrew tigger sunshine iloveyou fuckme charlie robert
thomas hockey ranger daniel starwars klaster 112233 george asshole computer
michelle jessica pepper 11111111 131313 freedom 777777 maggie 159753 aaaaaa ginger
princess joshua cheese amanda summer love ashley nicole chelsea biteme matthew
access yankees 987654321 dallas austin thunder taylor matrix minecraft william
corvette hello martin heather secret merlin diamond 1234qwer gfhjkm hammer silver
222222 88888888 anthony justin test bailey q1w2e3r4t5 patrick internet scooter
orange 11111 golfer cookie richard samantha bigdog guitar jackson whatever mickey
chicken sparky snoopy maverick phoenix camaro peanut morgan welcome falcon cowboy
ferrari samsung andrea smokey steelers joseph mercedes dakota arsenal eagles
melissa boomer booboo spider nascar monster tigers yellow xxxxxx 123123123 gateway
marina diablo bulldog qwer1234 compaq purple hardcore banana junior hannah 123654
porsche lakers iceman money cowboys 987654 london tennis 999999 ncc1701 coffee
scooby 0000 miller boston q1w2e3r4 brandon yamaha chester mother forever johnny
edward 333333 oliver redsox player nikita knight fender barney midnight please
brandy chicago badboy slayer rangers charles angel flower rabbit wizard bigdick
jasper enter rachel chris steven winner adidas victoria natasha 1q2w3e4r jasmine
winter prince panties marine ghbdtn fishing cocacola casper james 232323 raiders
888888 marlboro gandalf asdfasdf crystal 87654321 12344321 golden 8675309 hunter2
admin administrator root toor changeme default guest user login passw0rd p@ssword
p@ssw0rd pa55word pa$$word letmein123 welcome1 password1 password12 password123
password1234 passwordpassword mypassword mypassword123 secretpassword newpassword
supersecret topsecret iloveyou1 iloveyou2 iloveyouiloveyou qwerty123 qwerty1234
qwerty123456 qwertyqwerty qwertyuiop123 qwertyuiopasdfghjkl qwertyuiopasdfghjklzxcvbnm
asdfghjkl asdfghjkl123 zxcvbnm123 1q2w3e4r5t 1q2w3e4r5t6y 1q2w3e4r5t6y7u8i
1qaz2wsx3edc 1qaz2wsx3edc4rfv qazwsxedc qazwsxedcrfv qazwsxedc123 zaq12wsx
zaq12wsxcde3 zaq1zaq1 1qazxsw2 qweasdzxc qweasd123 qweasdzxc123 q1w2e3r4t5y6
a1b2c3d4 a1b2c3d4e5f6 abc123abc123 abcd1234 abcdefg abcdefgh 123abc aa123456
123456789012 1234567891 12345678910 123456789a 1234567890123 0987654321
11223344 1122334455 111222333 123412341234 741852963 147258369 159357 147852369
987456321 102030 10203040 12qwaszx 1a2b3c4d 789456123 456789 7654321
trustno1trustno1 letmeinletmein changeme123 changemenow welcome123 welcome2024
welcometoroost roost roostroost openai chatgpt artificialintelligence
football1 baseball1 basketball soccer123 football123 princess1 sunshine1
superman123 batman123 spiderman starwars123 pokemon pikachu naruto
dragonball harrypotter hogwarts gameofthrones thematrix jurassicpark
correcthorsebatterystaple correcthorse batterystaple
thequickbrownfoxjumpsoverthelazydog thequickbrownfox loremipsum
loremipsumdolorsitamet ihateyou iloveyoutoo iloveyousomuch iloveyoubaby
iloveu iloveme loveyou lovely lover loveme mylove babygirl babyboy sweetheart
sweetie honey cutie angel1 beautiful butterfly flowers rainbow unicorn
happiness happy123 smile sunflower chocolate strawberry blink182 metallica
liverpool chelsea1 manchester manchesterunited barcelona realmadrid juventus
arsenal1 newcastle tottenham everton celtic rangers1 yankees1 redsox1 lakers1
cowboys1 steelers1 packers patriots broncos eagles1 giants mets
jesus jesuschrist godisgood blessed christ faith trinity heaven
america usa freedom1 liberty patriot canada australia germany france
washington california newyork texas florida chicago1 london1 paris
monday tuesday friday sunday january february september october november
december spring summer1 autumn winter1 holiday vacation
mustang1 corvette1 ferrari1 porsche911 mercedes1 bmw toyota honda
computer1 internet1 google facebook youtube twitter myspace linkedin
microsoft windows apple macintosh linux ubuntu android iphone samsung1
nintendo playstation xbox360 warcraft worldofwarcraft counterstrike fortnite
roblox minecraft1 zelda mario
michael1 jennifer1 jessica1 ashley1 amanda1 daniel1 matthew1 andrew1
joshua1 charlie1 thomas1 robert1 william1 jordan23 jordan1 michaeljordan
master1 shadow1 monkey1 dragon1 killer1 hunter1 tigger1 ginger1 pepper1
cheese1 silver1 orange1 purple1 yellow1 hello123 hello1 helloworld
hellokitty whatever1 nothing anything something everything
qwertyu qwertyui asdfg asdf1234 zxcv1234 zxcvbn 1234asdf asdfqwer
letmein1 access14 secret1 secret123 private security security1 master123
superuser sysadmin webadmin adminadmin admin123 admin1234 administrator1
root123 rootroot test123 test1234 testtest testing testing123 demo demo123
temp temp123 temporary password! passwort motdepasse contrasena senha
wachtwoord salasana haslo parola sifre
trustme trustnoone blahblah asdasd asdasdasd qweqwe qweqweqwe zxczxc
aaaaaaaa abcabc abcabcabc 121212121212 101010 202020 pass1234 pass123
"""

COMMON_PASSWORDS: frozenset[str] = frozenset(word for word in _RAW.split() if len(word) >= 4)
