// The local user's name and colour: picked at random once, editable, remembered in localStorage.

const USER_KEY = 'collab.user'

export const PALETTE = [
  '#d1495b', '#e07a1f', '#c9a227', '#2f9e44', '#1c7c7d',
  '#1971c2', '#5f3dc4', '#9c36b5', '#c2255c', '#5c677d'
]

const ANIMALS = [
  'Otter', 'Heron', 'Lynx', 'Marten', 'Puffin', 'Ibex', 'Gecko', 'Wren', 'Bison', 'Koala',
  'Newt', 'Orca', 'Quokka', 'Raven', 'Tapir', 'Yak'
]

const pick = (list) => list[Math.floor(Math.random() * list.length)]

const isColor = (c) => typeof c === 'string' && /^#[0-9a-f]{6}$/i.test(c)

/** @returns {{name: string, color: string}} */
export const loadUser = () => {
  try {
    const saved = JSON.parse(localStorage.getItem(USER_KEY) ?? 'null')
    if (saved && typeof saved.name === 'string' && saved.name.trim() && isColor(saved.color)) {
      return { name: saved.name.trim().slice(0, 40), color: saved.color.toLowerCase() }
    }
  } catch {
    // unreadable: pick a new identity below
  }
  const user = { name: 'Anonymous ' + pick(ANIMALS), color: pick(PALETTE) }
  saveUser(user)
  return user
}

export const saveUser = (user) => {
  try {
    localStorage.setItem(USER_KEY, JSON.stringify(user))
  } catch {
    // storage disabled: the identity lasts for this page only
  }
}

/** The awareness `user` field y-codemirror.next reads: name, color and a translucent colorLight. */
export const awarenessUser = ({ name, color }) => ({ name, color, colorLight: color + '33' })
