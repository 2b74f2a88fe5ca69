"""The package every custom Keras object of the project is registered under. A saved
`.keras` file names each one as "fat2019>ClassName": this string and the class names must
stay as they are, or saved models stop loading."""

PACKAGE = "fat2019"
